//! A signed transaction in the canonical encoding (inside batches from peers), through the
//! checks the node runs before admitting it: stateless checks, its signature alone and in a
//! batch.
#![no_main]
use libfuzzer_sys::fuzz_target;
use quorate_fuzz::canonical;
use quorate_ledger::SignedTransaction;

fuzz_target!(|data: &[u8]| {
    let Some(tx) = canonical::<SignedTransaction>(data) else {
        return;
    };
    let _ = tx.id();
    let _ = tx.check_stateless(&quorate_ledger::ChainRules::signed_only("quorate-testnet"));
    let alone = tx.verify_signature().is_ok();
    let in_batch = SignedTransaction::verify_batch(std::slice::from_ref(&tx)).is_empty();
    assert_eq!(alone, in_batch, "batch and single verification disagree");
});
