//! `quorate audit`: verify a chain from genesis trusting nothing but the genesis file (SPEC
//! "Audit"). `--home DIR` reads a node's database read-only (it works beside the running node).

use crate::client::RpcClient;
use anyhow::{bail, Context, Result};
use quorate_consensus::{CertificateVerifier, CommitProofChecker};
use quorate_genesis::{Genesis, NodeConfig};
use quorate_ledger::audit::{audit, AuditGenesis, ChainSource};
use quorate_ledger::state::{initial_accumulator, state_root};
use quorate_ledger::{codec, Batch, CommittedBlock, Store};
use serde_json::json;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

/// Blocks downloaded from a node that is not trusted (`GET /v1/block/{h}/raw`).
struct RpcSource {
    client: RpcClient,
}

impl ChainSource for RpcSource {
    fn head_height(&self) -> Result<u64, String> {
        let status = self
            .client
            .get_ok("/v1/status")
            .map_err(|e| format!("{e:#}"))?;
        status["height"]
            .as_u64()
            .ok_or_else(|| "the node's status has no height".to_string())
    }

    fn block(&self, height: u64) -> Result<Option<(CommittedBlock, Vec<Batch>)>, String> {
        let reply = self
            .client
            .get(&format!("/v1/block/{height}/raw"))
            .map_err(|e| format!("{e:#}"))?;
        if reply.status == 404 {
            return Ok(None);
        }
        let body = reply.ok().map_err(|e| format!("{e:#}"))?;
        let text = body["hex"]
            .as_str()
            .ok_or_else(|| "the answer has no hex field".to_string())?;
        let bytes = hex::decode(text).map_err(|e| format!("the block is not hex: {e}"))?;
        let block: (CommittedBlock, Vec<Batch>) =
            codec::decode(&bytes).map_err(|e| format!("the block does not decode: {e}"))?;
        Ok(Some(block))
    }
}

pub struct AuditArgs<'a> {
    pub home: Option<&'a Path>,
    pub rpc: Option<&'a str>,
    pub genesis: Option<&'a Path>,
    pub json: bool,
}

/// Runs the audit; `Ok(true)` if the chain verified, `Ok(false)` if a check failed (already
/// reported), `Err` if it could not run at all.
pub fn run(args: AuditArgs) -> Result<bool> {
    let (genesis, source): (Genesis, Box<dyn ChainSource>) = match (args.home, args.rpc) {
        (Some(home), None) => {
            let config = NodeConfig::load(&home.join("config.toml"))
                .with_context(|| format!("loading {}/config.toml", home.display()))?;
            let genesis_path = match args.genesis {
                Some(path) => path.to_path_buf(),
                None => NodeConfig::resolve(home, &config.genesis_file),
            };
            let genesis = Genesis::load(&genesis_path)
                .with_context(|| format!("loading {}", genesis_path.display()))?;
            let db = NodeConfig::resolve(home, &config.data_dir).join("db");
            let store = Store::open_read_only(&db)
                .with_context(|| format!("opening {} read-only", db.display()))?;
            (genesis, Box::new(store))
        }
        (None, Some(url)) => {
            let path = args.genesis.context(
                "audit --rpc needs --genesis FILE: the genesis is the only thing trusted",
            )?;
            let genesis =
                Genesis::load(path).with_context(|| format!("loading {}", path.display()))?;
            let source = RpcSource {
                client: RpcClient::new(url)?,
            };
            (genesis, Box::new(source))
        }
        _ => bail!("give exactly one of --home DIR or --rpc URL"),
    };
    let genesis_hash = genesis.hash()?;
    let accounts = crate::node::genesis_accounts(&genesis);
    let governance = genesis.initial_governance();
    let state_root = state_root(
        initial_accumulator(accounts.iter().map(|(a, b)| (a, b))).root(),
        governance.digest()?,
    );
    let trusted = AuditGenesis {
        rules: genesis.rules(),
        genesis_hash,
        root: crate::node::genesis_root(&genesis, genesis_hash, state_root),
        accounts,
        governance,
    };
    // Epoch 0's proofs of possession, checked up front for a clear error.
    genesis.validator_set()?;
    let checker =
        CommitProofChecker::new(genesis_hash, genesis.protocol, CertificateVerifier::new());
    // A progress bar on a terminal; nothing when not a TTY or with --json.
    let bar = if !args.json && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "auditing {bar:40} {pos}/{len} blocks ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    let started = Instant::now();
    let outcome = audit(&trusted, source.as_ref(), &checker, |height, head| {
        if let Some(bar) = &bar {
            bar.set_length(head);
            bar.set_position(height);
        }
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let elapsed = started.elapsed().as_secs_f64();
    match outcome {
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    json!({
                        "ok": true,
                        "blocks": report.blocks,
                        "transactions": report.transactions,
                        "failed_transactions": report.failed_transactions,
                        "epochs": report.epochs,
                        "head_height": report.head_height,
                        "head_hash": report.head_hash,
                        "state_root": report.state_root,
                        "uncertified_tail": report.uncertified_tail,
                        "elapsed_s": elapsed,
                    })
                );
            } else {
                println!(
                    "ok: {} blocks, {} transactions ({} recorded as failed), {} epoch{}, head {} at height {}, state root {} ({elapsed:.2} s)",
                    report.blocks,
                    report.transactions,
                    report.failed_transactions,
                    report.epochs,
                    if report.epochs == 1 { "" } else { "s" },
                    report.head_hash,
                    report.head_height,
                    report.state_root,
                );
                if report.uncertified_tail > 0 {
                    println!(
                        "  the last {} blocks are not yet covered by a checkpoint certificate",
                        report.uncertified_tail
                    );
                }
            }
            Ok(true)
        }
        Err(failure) => {
            if args.json {
                println!(
                    "{}",
                    json!({
                        "ok": false,
                        "failed_height": failure.height,
                        "check": failure.check,
                        "error": failure.detail,
                    })
                );
            } else {
                eprintln!(
                    "audit failed at height {}: {}: {}",
                    failure.height, failure.check, failure.detail
                );
            }
            Ok(false)
        }
    }
}
