//! The HTTP/JSON RPC (SPEC "RPC") and `/metrics`. Every refusal is a 4xx/5xx with a JSON body
//! `{"error": "..."}` that names the problem.

use crate::mempool::SubmitError;
use crate::node::{Current, Shared};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use quorate_consensus::{CommitProof, EngineStatus, ProtocolStatus};
use quorate_crypto::{Address, Digest};
use quorate_ledger::{
    codec, Batch, CommittedBlock, Epoch, Height, SignedTransaction, StateReadError,
    TransactionError, TransactionKind, ValidatorInfo, MAX_TRANSACTION_BYTES,
};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tracing::debug;

/// Request bodies larger than this are refused with 413 before being read further.
const MAX_BODY_BYTES: usize = 2 * MAX_TRANSACTION_BYTES;
/// Transactions accepted in one `POST /v1/txs`.
pub const MAX_TXS_PER_REQUEST: usize = 1_000;
/// Body limit of `POST /v1/txs`.
const MAX_TXS_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The current epoch's [`Shared`] (swapped at each epoch boundary), taken per request.
struct Live(Arc<Shared>);

impl axum::extract::FromRequestParts<Arc<Current>> for Live {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        _parts: &mut axum::http::request::Parts,
        current: &Arc<Current>,
    ) -> Result<Self, Self::Rejection> {
        Ok(Live(current.get()))
    }
}

pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
}

pub async fn serve(listener: tokio::net::TcpListener, current: Arc<Current>) {
    let app = Router::new()
        .route("/v1/tx", post(submit))
        .route(
            "/v1/txs",
            post(submit_many).layer(DefaultBodyLimit::max(MAX_TXS_BODY_BYTES)),
        )
        .route("/v1/tx/{hash}", get(tx_status))
        .route("/v1/account/{address}", get(account))
        .route("/v1/block/{height}", get(block))
        .route("/v1/block/{height}/raw", get(block_raw))
        .route("/v1/status", get(status))
        .route("/v1/validators", get(validators))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(current);
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "RPC server stopped");
    }
}

fn submit_error(error: SubmitError) -> ApiError {
    let status = match &error {
        SubmitError::Invalid(TransactionError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
        SubmitError::Duplicate(_) | SubmitError::AlreadyCommitted(_) => StatusCode::CONFLICT,
        SubmitError::NonceTaken { .. } => StatusCode::CONFLICT,
        SubmitError::TooManyPending { .. } => StatusCode::TOO_MANY_REQUESTS,
        SubmitError::Full(_) => StatusCode::SERVICE_UNAVAILABLE,
        SubmitError::State(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError(status, error.to_string())
}

/// A validator-set change is checked against the committed governance state before anything
/// else, so its sender learns exactly which rule it breaks (execution applies the same rules to
/// the state its block builds on, and records the same refusal if that state refuses it).
fn check_governance(shared: &Shared, tx: &SignedTransaction) -> Result<(), SubmitError> {
    let TransactionKind::Reconfigure { epoch, change } = &tx.transaction().kind else {
        return Ok(());
    };
    let governance = shared
        .store
        .governance()
        .map_err(|e| StateReadError(e.to_string()))?;
    governance
        .get()
        .check(&tx.sender(), *epoch, change)
        .map_err(|e| SubmitError::Invalid(TransactionError::Governance(e)))
}

async fn submit(
    Live(shared): Live,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let reject = |error: ApiError| {
        shared
            .metrics
            .rejected_transactions
            .fetch_add(1, Ordering::Relaxed);
        error
    };
    let body = body.map_err(|rejection| {
        reject(ApiError(
            rejection.status(),
            format!("request body: {}", rejection.body_text()),
        ))
    })?;
    let tx: SignedTransaction = serde_json::from_slice(&body)
        .map_err(|error| reject(bad(format!("malformed transaction: {error}"))))?;
    let id = tx.id();
    if let Ok(true) = shared.store.is_committed(&id) {
        return Err(reject(submit_error(SubmitError::AlreadyCommitted(id))));
    }
    let reconfigure = matches!(tx.transaction().kind, TransactionKind::Reconfigure { .. });
    if reconfigure {
        // Signature first, then governance's rules (a state decode and maybe a pairing), off
        // the async workers: a forged change costs one ed25519 check.
        let (checker, change) = (shared.clone(), tx.clone());
        tokio::task::spawn_blocking(move || {
            change
                .verify_signature()
                .map_err(|e| SubmitError::BadSignature(e.to_string()))?;
            check_governance(&checker, &change)
        })
        .await
        .map_err(internal)?
        .map_err(|e| reject(submit_error(e)))?;
    }
    shared
        .mempool()
        .precheck(&tx, shared.store.as_ref())
        .map_err(|e| reject(submit_error(e)))?;
    // A validator-set change's signature was verified above.
    let tx = match reconfigure {
        true => tx,
        false => tokio::task::spawn_blocking(move || tx.verify_signature().map(|()| tx))
            .await
            .map_err(internal)?
            .map_err(|error| reject(submit_error(SubmitError::BadSignature(error.to_string()))))?,
    };
    let sealed = shared
        .mempool()
        .insert(tx, shared.store.as_ref())
        .map_err(|e| reject(submit_error(e)))?;
    if let Some(batch) = sealed {
        shared.publish_batch(batch);
    }
    debug!(%id, "transaction admitted");
    Ok(Json(json!({ "hash": id })))
}

/// The content type of `POST /v1/txs` in the canonical binary encoding.
pub const BINARY: &str = "application/octet-stream";

/// `POST /v1/txs`: up to [`MAX_TXS_PER_REQUEST`] signed transactions, checked with one ed25519
/// batch verification.
/// - As a JSON array: answers 200 with one result per transaction, in order: `{"hash": ...}`
///   if admitted, `{"error": ..., "status": CODE}` if not.
/// - With `Content-Type: application/octet-stream`, as the canonical binary encoding of the
///   array (what load generators send: no hex to parse): answers 200 with
///   `{"admitted": N, "rejected": [{"index": I, "error": ..., "status": CODE}, ...]}`, the
///   refused only (the sender knows the ids of what it sent).
async fn submit_many(
    Live(shared): Live,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(|rejection| {
        ApiError(
            rejection.status(),
            format!("request body: {}", rejection.body_text()),
        )
    })?;
    let binary = headers
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(BINARY.as_bytes()));
    let txs: Vec<SignedTransaction> = if binary {
        codec::decode(&body)
            .map_err(|error| bad(format!("malformed binary transaction array: {error}")))?
    } else {
        serde_json::from_slice(&body)
            .map_err(|error| bad(format!("malformed transaction array: {error}")))?
    };
    if txs.len() > MAX_TXS_PER_REQUEST {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} transactions in one request; at most {MAX_TXS_PER_REQUEST}",
                txs.len()
            ),
        ));
    }
    let mut results: Vec<Option<Result<Digest, ApiError>>> = Vec::with_capacity(txs.len());
    let mut indices = Vec::new();
    let mut candidates = Vec::new();
    let ids: Vec<Digest> = txs.iter().map(SignedTransaction::id).collect();
    let committed = shared.store.committed_among(&ids);
    for (index, tx) in txs.into_iter().enumerate() {
        let id = tx.id();
        let committed = committed
            .as_ref()
            .map(|committed| committed.get(index).copied().unwrap_or(false));
        let checked = match committed {
            Ok(true) => Err(submit_error(SubmitError::AlreadyCommitted(id))),
            Ok(false) if matches!(tx.transaction().kind, TransactionKind::Reconfigure { .. }) => {
                Err(bad(
                    "submit validator-set changes one at a time, with POST /v1/tx",
                ))
            }
            Ok(false) => shared
                .mempool()
                .precheck(&tx, shared.store.as_ref())
                .map_err(submit_error),
            Err(error) => Err(internal(error)),
        };
        match checked {
            Ok(()) => {
                results.push(None);
                indices.push(index);
                candidates.push(tx);
            }
            Err(error) => results.push(Some(Err(error))),
        }
    }
    let (candidates, invalid) = tokio::task::spawn_blocking(move || {
        let invalid: HashSet<usize> = SignedTransaction::verify_batch(&candidates)
            .into_iter()
            .collect();
        (candidates, invalid)
    })
    .await
    .map_err(internal)?;
    let mut sealed = Vec::new();
    {
        let mut mempool = shared.mempool();
        for (position, (index, tx)) in indices.into_iter().zip(candidates).enumerate() {
            let id = tx.id();
            results[index] = Some(if invalid.contains(&position) {
                Err(submit_error(SubmitError::BadSignature(
                    "ed25519 verification failed".into(),
                )))
            } else {
                match mempool.insert(tx, shared.store.as_ref()) {
                    Ok(batch) => {
                        sealed.extend(batch);
                        Ok(id)
                    }
                    Err(error) => Err(submit_error(error)),
                }
            });
        }
    }
    for batch in sealed {
        shared.publish_batch(batch);
    }
    let results = results.into_iter().map(|result| {
        result.unwrap_or_else(|| {
            Err(ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "not processed".into(),
            ))
        })
    });
    let refused = |ApiError(status, error): ApiError| {
        shared
            .metrics
            .rejected_transactions
            .fetch_add(1, Ordering::Relaxed);
        (error, status.as_u16())
    };
    if binary {
        let mut admitted = 0u64;
        let mut rejected = Vec::new();
        for (index, result) in results.enumerate() {
            match result {
                Ok(_) => admitted += 1,
                Err(error) => {
                    let (error, status) = refused(error);
                    rejected.push(json!({ "index": index, "error": error, "status": status }));
                }
            }
        }
        return Ok(Json(json!({ "admitted": admitted, "rejected": rejected })));
    }
    let results: Vec<Value> = results
        .map(|result| match result {
            Ok(id) => json!({ "hash": id }),
            Err(error) => {
                let (error, status) = refused(error);
                json!({ "error": error, "status": status })
            }
        })
        .collect();
    Ok(Json(json!({ "results": results })))
}

fn parse_digest(text: &str) -> Result<Digest, ApiError> {
    Digest::from_hex(text).map_err(|error| bad(format!("transaction hash {text:?}: {error}")))
}

async fn tx_status(Live(shared): Live, Path(hash): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = parse_digest(&hash)?;
    if let Some(location) = shared.store.tx(&id).map_err(internal)? {
        let (result, error) = match &location.receipt {
            Ok(()) => ("ok", None),
            Err(failure) => ("failed", Some(failure.to_string())),
        };
        return Ok(Json(json!({
            "hash": id,
            "status": "committed",
            "height": location.height.0,
            "block_hash": location.block_hash,
            "index": location.index,
            "result": result,
            "error": error,
        })));
    }
    let status = if shared.mempool().is_pending(&id) {
        "pending"
    } else {
        "unknown"
    };
    Ok(Json(json!({ "hash": id, "status": status })))
}

async fn account(Live(shared): Live, Path(address): Path<String>) -> Result<Json<Value>, ApiError> {
    let address = Address::from_hex(&address)
        .map_err(|error| bad(format!("address {address:?}: {error}")))?;
    let committed = shared.store.account(&address).map_err(internal)?;
    let next_nonce = shared
        .mempool()
        .next_nonce(&address, shared.store.as_ref())
        .map_err(internal)?;
    let height = shared.store.head().map_err(internal)?.map(|h| h.height.0);
    Ok(Json(json!({
        "address": address,
        "balance": committed.balance,
        "nonce": committed.nonce,
        "next_nonce": next_nonce,
        "height": height,
    })))
}

/// The committed block at the height in the path, with its batches (404 if there is none).
/// A recent block's batches are the store's in-memory copies, shared, not cloned.
fn committed_block(
    shared: &Shared,
    height: &str,
) -> Result<(u64, CommittedBlock, Vec<Arc<Batch>>), ApiError> {
    let height: u64 = height
        .parse()
        .map_err(|_| bad(format!("height {height:?} is not a number")))?;
    let Some(record) = shared.store.committed(Height(height)).map_err(internal)? else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no committed block at height {height}"),
        ));
    };
    let batches = record
        .batches
        .iter()
        .map(|digest| match shared.store.batch(digest) {
            Ok(Some(batch)) => Ok(batch),
            Ok(None) => Err(internal(format!(
                "batch {digest} of block {height} is not stored"
            ))),
            Err(error) => Err(internal(error)),
        })
        .collect::<Result<_, _>>()?;
    Ok((height, record, batches))
}

#[derive(serde::Deserialize)]
struct BlockQuery {
    /// `hashes`: list only the transactions' hashes (what a load client needs).
    txs: Option<String>,
}

async fn block(
    Live(shared): Live,
    Path(height): Path<String>,
    query: Result<Query<BlockQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|rejection| bad(rejection.body_text()))?;
    let hashes_only = match query.txs.as_deref() {
        None | Some("full") => false,
        Some("hashes") => true,
        Some(other) => return Err(bad(format!("txs={other:?}: expected full or hashes"))),
    };
    let (height, record, batches) = committed_block(&shared, &height)?;
    let hash = record.header.hash().map_err(internal)?;
    let transactions = batches.iter().flat_map(|b| b.transactions.iter());
    let proof: Option<CommitProof> = if record.proof.is_empty() {
        None
    } else {
        Some(codec::decode(&record.proof).map_err(internal)?)
    };
    let transactions: Vec<Value> = transactions
        .zip(record.receipts.iter())
        .map(|(tx, receipt)| {
            if hashes_only {
                return json!(tx.id());
            }
            json!({
                "hash": tx.id(),
                "transaction": tx,
                "result": match receipt { Ok(()) => "ok".to_string(), Err(e) => format!("failed: {e}") },
            })
        })
        .collect();
    let failed: Vec<usize> = record
        .receipts
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_err())
        .map(|(i, _)| i)
        .collect();
    Ok(Json(json!({
        "height": height,
        "hash": hash,
        "header": record.header,
        "batches": record.batches,
        "transactions": transactions,
        "failed": failed,
        "proof": proof,
    })))
}

/// `GET /v1/block/{height}/raw`: the committed block record and its batches in the canonical
/// encoding, hex (what `quorate audit --rpc` verifies; the client trusts none of it).
async fn block_raw(
    Live(shared): Live,
    Path(height): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (height, record, batches) = committed_block(&shared, &height)?;
    let bytes = codec::encode(&(record, batches)).map_err(internal)?;
    Ok(Json(json!({
        "height": height,
        "encoding": "bincode",
        "hex": hex::encode(bytes),
    })))
}

async fn status(Live(shared): Live) -> Result<Json<Value>, ApiError> {
    let head = shared
        .store
        .head()
        .map_err(internal)?
        .ok_or_else(|| internal("no head"))?;
    let engine = shared
        .status
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    // A follower runs no engine: no view, leader or consensus state of its own.
    let engine_part = |f: &dyn Fn(&EngineStatus) -> Value| engine.as_ref().map_or(Value::Null, f);
    let governance = shared.store.governance().map_err(internal)?;
    Ok(Json(json!({
        "chain_id": shared.chain_id,
        "protocol": shared.protocol.to_string(),
        "epoch": governance.epoch().0,
        "view": engine_part(&|e| e.view.0.into()),
        "height": head.height.0,
        "head_hash": head.hash,
        "state_root": head.header.state_root,
        "leader": engine_part(&|e| e.leader.into()),
        "role": if shared.me.is_some() { "validator" } else { "follower" },
        "validator_index": shared.me,
        "validators": governance.get().validators.len(),
        "peers": shared.net.connected(),
        "mempool": shared.mempool().len(),
        "timeouts": engine_part(&|e| e.timeouts.into()),
        "consensus": engine_part(&protocol_status),
    })))
}

#[derive(serde::Deserialize)]
struct EpochQuery {
    epoch: Option<u64>,
}

fn validator_json(index: usize, v: &ValidatorInfo) -> Value {
    json!({
        "index": index,
        "name": v.name,
        "identity_key": v.identity_key,
        "bls_key": v.bls_key,
        "p2p_address": v.p2p_address,
        "voting_power": v.voting_power,
    })
}

/// `GET /v1/validators[?epoch=E]`: the set of the current epoch (with open proposals and the
/// scheduled change) or of an earlier one the committed chain went through.
async fn validators(
    Live(shared): Live,
    query: Result<Query<EpochQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| bad(format!("query: {}", e.body_text())))?;
    let governance = shared.store.governance().map_err(internal)?;
    let current = governance.get();
    let epoch = query.epoch.map_or(current.epoch, Epoch);
    if epoch > current.epoch {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "epoch {epoch} has not begun: the committed chain is in epoch {}",
                current.epoch
            ),
        ));
    }
    let set = match epoch == current.epoch {
        true => current.validators.clone(),
        false => shared
            .store
            .epoch_validators(epoch)
            .map_err(internal)?
            .ok_or_else(|| internal(format!("no record of epoch {epoch}'s validators")))?,
    };
    let total: u64 = set.iter().map(|v| v.voting_power).sum();
    let mut answer = json!({
        "epoch": epoch.0,
        "validators": set.iter().enumerate().map(|(i, v)| validator_json(i, v)).collect::<Vec<_>>(),
        "total_power": total,
        "quorum_power": quorate_ledger::governance::quorum_power(total),
    });
    if epoch == current.epoch {
        answer["governance"] = json!({
            "members": current.config.members,
            "threshold": current.config.threshold,
            "proposals": current.proposals.iter().map(|p| json!({
                "change": p.change,
                "approvals": p.approvals,
            })).collect::<Vec<_>>(),
            "scheduled": current.scheduled.as_ref().map(|s| json!({
                "height": s.height.0,
                "validators": s.validators.iter().enumerate().map(|(i, v)| validator_json(i, v)).collect::<Vec<_>>(),
            })),
        });
    }
    Ok(Json(answer))
}

/// What only the chain's protocol has, for `/v1/status`.
fn protocol_status(engine: &EngineStatus) -> Value {
    match engine.protocol {
        ProtocolStatus::HotStuff {
            high_qc_view,
            locked_view,
            lock_refusals,
        } => json!({
            "high_qc_view": high_qc_view.0,
            "locked_view": locked_view.0,
            "lock_refusals": lock_refusals,
        }),
        ProtocolStatus::Pbft {
            stable_checkpoint,
            high_watermark,
            view_changing,
        } => json!({
            "primary": engine.leader,
            "stable_checkpoint": stable_checkpoint.0,
            "low_watermark": stable_checkpoint.0,
            "high_watermark": high_watermark.0,
            "view_changing": view_changing,
            "view_changes": engine.timeouts,
        }),
    }
}

async fn metrics(Live(shared): Live) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        shared.metrics.render(),
    )
}
