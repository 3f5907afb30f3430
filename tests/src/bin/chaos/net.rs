//! The chaos network: one network namespace per validator, each with a veth pair to a bridge
//! in the host namespace, and a link emulator on the bridge.
//!
//! ```text
//!   ns qc<tag>-0 (10.X.Y.1) --veth--+
//!   ns qc<tag>-1 (10.X.Y.2) --veth--+-- bridge qcb<tag> (10.X.Y.254, the load client and driver)
//!   ...                             |
//! ```
//! Validator-to-validator packets cross the bridge, and with `br_netfilter` they pass the host's
//! iptables FORWARD chain, where one rule hands them to an NFQUEUE that [`Emulator`] serves:
//! it delays each packet (default 5 ms ± 2 ms), drops what a partition or a lossy link says
//! to, and adds latency to a slow link. This kernel has no `sch_netem` (nor tc's drop action),
//! so the emulator does in user space what netem would; with netem present the result would be
//! the same packets dropped and delayed. Traffic between the driver and a node's RPC is local to
//! the bridge and never delayed or cut: the client always sees what the nodes say.

use anyhow::{bail, Context, Result};
use std::collections::BinaryHeap;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quorate_consensus::sim::Rng;

/// Runs `program args`, failing with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<()> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}: is it installed?"))?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// The namespaces, links and bridge of one run; removed when dropped.
pub struct Net {
    pub namespaces: Vec<String>,
    pub hosts: Vec<Ipv4Addr>,
    pub bridge: String,
    pub subnet: [u8; 3],
    pub queue: u16,
    veths: Vec<String>,
    rule: Vec<String>,
}

impl Net {
    /// Builds the network for `validators` nodes. `tag` keeps names apart from other runs.
    pub fn create(validators: usize, tag: u32) -> Result<Net> {
        if validators == 0 || validators > 200 {
            bail!("{validators} validators: the chaos network holds 1 to 200");
        }
        // A /24 of 10.0.0.0/8 that no route of this host uses yet.
        let routes = String::from_utf8_lossy(
            &Command::new("ip")
                .args(["-4", "route", "show"])
                .output()
                .context("cannot run ip: install iproute2")?
                .stdout,
        )
        .to_string();
        let mut subnet = None;
        for k in 0..4096u32 {
            let candidate = (tag.wrapping_add(k.wrapping_mul(7919))) % (200 * 250);
            let (x, y) = (20 + (candidate / 250) as u8, (candidate % 250) as u8);
            if !routes.contains(&format!("10.{x}.{y}.")) {
                subnet = Some([10, x, y]);
                break;
            }
        }
        let subnet = subnet.context("no free 10.x.y.0/24 subnet")?;
        let mut net = Net {
            namespaces: Vec::new(),
            hosts: Vec::new(),
            bridge: format!("qcb{tag}"),
            subnet,
            queue: 1000 + (tag % 30000) as u16,
            veths: Vec::new(),
            rule: Vec::new(),
        };
        let cidr = |last: u8| format!("{}.{}.{}.{last}", subnet[0], subnet[1], subnet[2]);
        run("ip", &["link", "add", &net.bridge, "type", "bridge"]).context(
            "cannot create a bridge: chaos needs root (CAP_NET_ADMIN) and a kernel with bridges \
             and network namespaces",
        )?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", cidr(254)),
                "dev",
                &net.bridge,
            ],
        )?;
        run("ip", &["link", "set", &net.bridge, "up"])?;
        for i in 0..validators {
            let ns = format!("qc{tag}-{i}");
            run("ip", &["netns", "add", &ns])
                .context("cannot create a network namespace: chaos needs root")?;
            net.namespaces.push(ns.clone());
            let veth = format!("qcv{tag}-{i}");
            run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            net.veths.push(veth.clone());
            run("ip", &["link", "set", &veth, "master", &net.bridge, "up"])?;
            let host = cidr(i as u8 + 1);
            run(
                "ip",
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{host}/24"),
                    "dev",
                    "eth0",
                ],
            )?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            net.hosts.push(host.parse().context("host address")?);
        }
        // Bridged IPv4 through iptables, and validator-to-validator packets to the emulator.
        std::fs::write("/proc/sys/net/bridge/bridge-nf-call-iptables", "1")
            .context("cannot enable br_netfilter (bridge-nf-call-iptables)")?;
        let range = format!("{}/24", cidr(0));
        let queue = net.queue.to_string();
        net.rule = [
            "FORWARD",
            "-s",
            &range,
            "-d",
            &range,
            "-j",
            "NFQUEUE",
            "--queue-num",
            &queue,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut insert = vec!["-I".to_string()];
        insert.extend(net.rule.iter().cloned());
        let insert: Vec<&str> = insert.iter().map(String::as_str).collect();
        run("iptables", &insert).context("cannot add the NFQUEUE rule (install iptables)")?;
        Ok(net)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if !self.rule.is_empty() {
            let mut delete = vec!["-D".to_string()];
            delete.extend(self.rule.iter().cloned());
            let delete: Vec<&str> = delete.iter().map(String::as_str).collect();
            let _ = run("iptables", &delete);
        }
        for ns in &self.namespaces {
            let _ = run("ip", &["netns", "del", ns]);
        }
        for veth in &self.veths {
            let _ = run("ip", &["link", "del", veth]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
}

/// What the emulator does to validator-to-validator packets right now.
#[derive(Clone, Debug, Default)]
pub struct LinkFaults {
    /// Per node, its side of a partition: packets between different sides are dropped.
    pub side: Vec<u8>,
    /// A node whose packets (both ways) are dropped with this probability, in percent.
    pub lossy: Option<(usize, u32)>,
    /// A node whose packets (both ways) wait this much longer, in ms, plus up to half again.
    pub slow: Option<(usize, u64)>,
}

impl LinkFaults {
    pub fn healthy(validators: usize) -> LinkFaults {
        LinkFaults {
            side: vec![0; validators],
            lossy: None,
            slow: None,
        }
    }
}

/// Packet counts, for the summary.
#[derive(Default)]
pub struct LinkStats {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
}

/// The NFQUEUE server: delays, drops and forwards validator-to-validator packets.
pub struct Emulator {
    pub faults: Arc<Mutex<LinkFaults>>,
    pub stats: Arc<LinkStats>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

struct Held {
    due: Instant,
    order: u64,
    message: nfq::Message,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    // A min-heap on (due, order).
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.order).cmp(&(self.due, self.order))
    }
}

impl Emulator {
    /// Starts serving `net`'s queue with `delay_ms` ± `jitter_ms` on every link.
    pub fn start(net: &Net, delay_ms: u64, jitter_ms: u64, seed: u64) -> Result<Emulator> {
        let mut queue = nfq::Queue::open().context("cannot open an NFQUEUE netlink socket")?;
        queue
            .bind(net.queue)
            .context("cannot bind the NFQUEUE (kernel without nfnetlink_queue?)")?;
        // Only the IPv4 header is needed to decide.
        queue.set_copy_range(net.queue, 64)?;
        queue.set_queue_max_len(net.queue, 65536)?;
        queue.set_nonblocking(true);
        let faults = Arc::new(Mutex::new(LinkFaults::healthy(net.hosts.len())));
        let stats = Arc::new(LinkStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let subnet = net.subnet;
        let validators = net.hosts.len();
        let index_of = move |a: &[u8]| -> Option<usize> {
            if a.get(..3)? != subnet {
                return None;
            }
            let last = *a.get(3)? as usize;
            (1..=validators).contains(&last).then(|| last - 1)
        };
        let thread = {
            let (faults, stats, stop) = (faults.clone(), stats.clone(), stop.clone());
            std::thread::Builder::new()
                .name("link-emulator".into())
                .spawn(move || -> Result<()> {
                    let mut rng = Rng::new(seed ^ 0x6c69_6e6b);
                    let mut held = BinaryHeap::new();
                    let mut order = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let mut received = false;
                        loop {
                            match queue.recv() {
                                Ok(mut message) => {
                                    received = true;
                                    let payload = message.get_payload();
                                    let (src, dst) = (
                                        payload.get(12..16).and_then(index_of),
                                        payload.get(16..20).and_then(index_of),
                                    );
                                    let faults = faults.lock().unwrap_or_else(|p| p.into_inner());
                                    let (Some(src), Some(dst)) = (src, dst) else {
                                        message.set_verdict(nfq::Verdict::Accept);
                                        queue.verdict(message)?;
                                        continue;
                                    };
                                    let cut = faults.side.get(src) != faults.side.get(dst);
                                    let lost = faults.lossy.is_some_and(|(node, percent)| {
                                        (node == src || node == dst)
                                            && rng.range(0, 99) < u64::from(percent)
                                    });
                                    if cut || lost {
                                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                                        message.set_verdict(nfq::Verdict::Drop);
                                        queue.verdict(message)?;
                                        continue;
                                    }
                                    let mut delay_us = (delay_ms * 1000)
                                        .saturating_sub(jitter_ms * 1000)
                                        + rng.range(0, 2 * jitter_ms * 1000);
                                    if let Some((node, extra_ms)) = faults.slow {
                                        if node == src || node == dst {
                                            delay_us +=
                                                extra_ms * 1000 + rng.range(0, extra_ms * 500);
                                        }
                                    }
                                    message.set_verdict(nfq::Verdict::Accept);
                                    order += 1;
                                    held.push(Held {
                                        due: Instant::now() + Duration::from_micros(delay_us),
                                        order,
                                        message,
                                    });
                                }
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                                Err(e) => return Err(e).context("reading the NFQUEUE"),
                            }
                        }
                        let now = Instant::now();
                        while held.peek().is_some_and(|h: &Held| h.due <= now) {
                            if let Some(h) = held.pop() {
                                stats.forwarded.fetch_add(1, Ordering::Relaxed);
                                queue.verdict(h.message)?;
                            }
                        }
                        if !received {
                            let next = held
                                .peek()
                                .map(|h| h.due.saturating_duration_since(now))
                                .unwrap_or(Duration::from_millis(1));
                            std::thread::sleep(next.min(Duration::from_micros(500)));
                        }
                    }
                    // Let everything still held go.
                    while let Some(h) = held.pop() {
                        queue.verdict(h.message)?;
                    }
                    Ok(())
                })?
        };
        Ok(Emulator {
            faults,
            stats,
            stop,
            thread: Some(thread),
        })
    }

    pub fn set(&self, change: impl FnOnce(&mut LinkFaults)) {
        change(&mut self.faults.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Fails if the emulator thread died (then no packet between validators moves).
    pub fn check(&mut self) -> Result<()> {
        if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            if let Some(thread) = self.thread.take() {
                match thread.join() {
                    Ok(Ok(())) => bail!("the link emulator stopped"),
                    Ok(Err(e)) => return Err(e.context("the link emulator failed")),
                    Err(_) => bail!("the link emulator panicked"),
                }
            }
        }
        Ok(())
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
