//! `quorate localnet`: a testnet and all its validators as child processes until Ctrl-C, then a
//! clean stop (SIGTERM to each, wait).

use anyhow::{Context, Result};
use quorate_genesis::{
    generate_testnet, AccountKeyFile, ConsensusParams, Genesis, NodeConfig, Protocol, TestnetSpec,
};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn localnet(
    validators: u16,
    protocol: Option<Protocol>,
    dir: &Path,
    base_port: u16,
    accounts: usize,
) -> Result<()> {
    let genesis_path = dir.join("genesis.json");
    if !genesis_path.exists() {
        let genesis_time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("system clock is before 1970")?
            .as_millis() as u64;
        generate_testnet(&TestnetSpec {
            validators: validators as usize,
            protocol: protocol.unwrap_or(Protocol::HotStuff),
            accounts,
            governance: 1,
            dir: dir.to_path_buf(),
            base_port,
            hosts: Vec::new(),
            chain_id: "quorate-localnet".into(),
            initial_balance: 1_000_000_000,
            genesis_time_ms,
            params: ConsensusParams::default(),
        })
        .with_context(|| format!("generating the testnet in {}", dir.display()))?;
    } else {
        eprintln!("reusing the testnet in {}", dir.display());
    }
    let genesis = Genesis::load(&genesis_path)?;
    if let Some(asked) = protocol.filter(|asked| *asked != genesis.protocol) {
        anyhow::bail!(
            "{} holds a {} chain, not {asked}: delete it, or pass another --dir",
            dir.display(),
            genesis.protocol
        );
    }
    let exe = std::env::current_exe().context("locating the quorate binary")?;
    let mut children: Vec<(usize, Child, PathBuf)> = Vec::new();
    for index in 0..genesis.validators.len() {
        let home = dir
            .join(format!("node{index}"))
            .canonicalize()
            .with_context(|| format!("node{index} home in {}", dir.display()))?;
        let config = NodeConfig::load(&home.join("config.toml"))?;
        let log_path = home.join("node.log");
        let child = spawn_validator(&exe, &home, &log_path)
            .with_context(|| format!("starting node{index}"))?;
        println!(
            "node{index} rpc=http://{} log={}",
            config.rpc_listen,
            log_path.display()
        );
        children.push((index, child, log_path));
    }
    let first_rpc = NodeConfig::load(&dir.join("node0").join("config.toml"))?.rpc_listen;
    let accounts_dir = dir.join("accounts");
    let sender = accounts_dir.join("account-0.json");
    let recipient = match AccountKeyFile::load(&accounts_dir.join("account-1.json")) {
        Ok(key) => key.public().address().to_string(),
        Err(_) => "ADDRESS".into(),
    };
    println!(
        "localnet of {} validators running; Ctrl-C stops it. Send a first transaction:\n  \
         {} tx transfer --key {} --to {recipient} --amount 10 --rpc http://{first_rpc} --wait",
        children.len(),
        exe.display(),
        sender.display(),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = terminate.recv() => break,
                _ = tick.tick() => {
                    for (index, child, log) in children.iter_mut() {
                        if let Ok(Some(status)) = child.try_wait() {
                            eprintln!("node{index} exited ({status}); see {}", log.display());
                        }
                    }
                    children.retain_mut(|(_, child, _)| matches!(child.try_wait(), Ok(None)));
                    if children.is_empty() {
                        break;
                    }
                }
            }
        }
        anyhow::Ok(())
    })?;
    eprintln!("stopping {} validators", children.len());
    stop_validators(
        children
            .into_iter()
            .map(|(index, child, _)| (index, child))
            .collect(),
    );
    Ok(())
}

/// Starts `quorate run --home HOME` as a child with its output appended to `log_path`. The child
/// gets SIGTERM when this process dies, so a killed parent never leaves validators behind.
pub fn spawn_validator(exe: &Path, home: &Path, log_path: &Path) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut command = Command::new(exe);
    command
        .arg("run")
        .arg("--home")
        .arg(home)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: prctl is async-signal-safe; it makes the child die with this process.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    Ok(command.spawn()?)
}

/// SIGTERM to every child, then waits up to 10 s for each (killing it after that).
pub fn stop_validators(children: Vec<(usize, Child)>) {
    for (_, child) in &children {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    for (index, mut child) in children {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    eprintln!("node{index} did not stop in 10 s; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
    }
}
