//! JSON bodies of `POST /v1/tx` (one signed transaction) and `POST /v1/txs` (an array), through
//! the checks the RPC runs before the mempool.
#![no_main]
use libfuzzer_sys::fuzz_target;
use quorate_fuzz::json_fixed_point;
use quorate_ledger::SignedTransaction;

fuzz_target!(|data: &[u8]| {
    if let Some(tx) = json_fixed_point::<SignedTransaction>(data) {
        let _ = tx.check_stateless(&quorate_ledger::ChainRules::signed_only("quorate-testnet"));
        let _ = tx.verify_signature();
    }
    if let Some(txs) = json_fixed_point::<Vec<SignedTransaction>>(data) {
        let _ = SignedTransaction::verify_batch(&txs);
    }
});
