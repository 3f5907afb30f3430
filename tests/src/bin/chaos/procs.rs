//! The validator processes: each `quorate run` in its own namespace, killed, paused, restarted
//! (optionally with a skewed wall clock) on the nemesis's word, with its peak memory sampled.

use anyhow::{Context, Result};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// libfaketime's multi-threaded library (Debian's `faketime` package), if installed.
pub fn libfaketime() -> Option<PathBuf> {
    let dirs = std::fs::read_dir("/usr/lib").ok()?;
    dirs.flatten()
        .map(|d| d.path().join("faketime/libfaketimeMT.so.1"))
        .chain([PathBuf::from("/usr/lib/faketime/libfaketimeMT.so.1")])
        .find(|p| p.is_file())
}

pub struct Node {
    pub home: PathBuf,
    pub namespace: String,
    child: Option<Child>,
    pub paused: bool,
    /// Seconds the wall clock of the running process is shifted by (faketime).
    pub skew_s: i64,
    pub peak_rss_kb: u64,
    pub starts: u64,
}

pub struct Nodes {
    pub nodes: Vec<Node>,
    quorate: PathBuf,
}

impl Nodes {
    pub fn new(quorate: &Path, homes: Vec<PathBuf>, namespaces: &[String]) -> Nodes {
        Nodes {
            nodes: homes
                .into_iter()
                .zip(namespaces)
                .map(|(home, namespace)| Node {
                    home,
                    namespace: namespace.clone(),
                    child: None,
                    paused: false,
                    skew_s: 0,
                    peak_rss_kb: 0,
                    starts: 0,
                })
                .collect(),
            quorate: quorate.to_path_buf(),
        }
    }

    /// Starts node `i` in its namespace, its wall clock `skew_s` seconds off (0: true time).
    pub fn start(&mut self, i: usize, skew_s: i64) -> Result<()> {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.home.join("node.log"))
            .context("node log")?;
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &node.namespace]);
        if skew_s != 0 {
            // libfaketime preloaded into the node itself (the `faketime` program would fork,
            // and a kill -9 of it would leave the node running). Only the wall clock: timers
            // run on the monotonic clock, as on a host whose NTP is off by that much.
            let library = libfaketime().context("the skew fault needs libfaketime")?;
            command
                .env("LD_PRELOAD", library)
                .env("FAKETIME", format!("{skew_s:+}s"))
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        command
            .arg(&self.quorate)
            .args(["run", "--home"])
            .arg(&node.home)
            .env(
                "RUST_LOG",
                std::env::var("QUORATE_CHAOS_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // The node dies with the driver, whatever ends it.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        node.child = Some(command.spawn().context("starting quorate run")?);
        node.paused = false;
        node.skew_s = skew_s;
        node.starts += 1;
        Ok(())
    }

    fn signal(&self, i: usize, signal: libc::c_int) {
        if let Some(child) = &self.nodes[i].child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as libc::pid_t, signal);
            }
        }
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.nodes[i].paused = false;
    }

    pub fn pause(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        self.nodes[i].paused = true;
    }

    pub fn resume(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
        self.nodes[i].paused = false;
    }

    /// SIGTERM and wait (SIGKILL after `grace`); true if it exited cleanly.
    pub fn stop(&mut self, i: usize, grace: Duration) -> bool {
        self.resume(i);
        self.signal(i, libc::SIGTERM);
        let Some(mut child) = self.nodes[i].child.take() else {
            return true;
        };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// A node whose process has exited on its own (a crash): its index and exit status.
    pub fn crashed(&mut self) -> Option<(usize, std::process::ExitStatus)> {
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if let Some(child) = &mut node.child {
                if let Ok(Some(status)) = child.try_wait() {
                    node.child = None;
                    return Some((i, status));
                }
            }
        }
        None
    }

    /// Reads every running node's resident memory and keeps the peak.
    pub fn sample_rss(&mut self) {
        for node in &mut self.nodes {
            let Some(child) = &node.child else { continue };
            let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", child.id())) else {
                continue;
            };
            let rss = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            node.peak_rss_kb = node.peak_rss_kb.max(rss);
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill9(i);
        }
    }
}
