//! The pending view of each sender: which of its nonces are held (unsealed here, or in a sealed
//! batch), what each will spend, and so which nonce a client should use next and how much of
//! the committed balance is still free.
//!
//! The rule it follows is the ledger's (`quorate_ledger::execute`): a transaction with the
//! sender's next nonce consumes that nonce whatever its effect. A sealed transaction has left
//! this node (peers hold its batch, any leader may propose it), so it will consume its nonce even
//! if it fails; an unsealed one that can no longer apply is evicted instead. So the view never
//! runs ahead of what will execute.

use quorate_crypto::Digest;
use quorate_ledger::{Account, SignedTransaction, TransactionKind};
use std::collections::BTreeMap;

/// One held transaction of a sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub id: Digest,
    /// The balance it needs to apply.
    pub need: u64,
    /// What it takes from the balance when it applies (0 for a transfer to itself).
    pub spend: u64,
    /// In a batch that has left this node (ours broadcast, or a peer's).
    pub sealed: bool,
}

impl Entry {
    pub fn of(tx: &SignedTransaction, sealed: bool) -> Entry {
        let (need, spend) = match tx.transaction().kind {
            TransactionKind::Transfer { to, amount } => {
                (amount, if to == tx.sender() { 0 } else { amount })
            }
            // Never held in a sender's view (see the mempool); spends nothing.
            TransactionKind::Opaque { .. } => (0, 0),
            // Consumes a nonce, spends nothing.
            TransactionKind::Reconfigure { .. } => (0, 0),
        };
        Entry {
            id: tx.id(),
            need,
            spend,
            sealed,
        }
    }
}

/// What the held transactions of one sender add up to, from its committed account.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Run {
    /// One past the last nonce that will be consumed: the nonce a client should use next.
    pub next_nonce: u64,
    /// The committed balance less what the transactions of the run will spend.
    pub available: u64,
    /// The first unsealed transaction of the run that cannot apply (it is to be evicted).
    pub cannot_apply: Option<u64>,
}

/// The held transactions of one sender, by nonce.
#[derive(Debug, Default)]
pub(super) struct SenderView {
    pub by_nonce: BTreeMap<u64, Entry>,
}

impl SenderView {
    /// Walks the consecutive nonces from the committed one, as execution would: each applies if
    /// the balance left covers it; a sealed one that does not still consumes its nonce; an
    /// unsealed one that does not ends the run.
    pub fn run(&self, committed: &Account) -> Run {
        let mut next_nonce = committed.nonce;
        let mut available = committed.balance;
        for (nonce, entry) in self.by_nonce.range(committed.nonce..) {
            if *nonce != next_nonce {
                break; // a gap: what follows cannot apply until it is filled
            }
            if entry.need <= available {
                available -= entry.spend;
            } else if !entry.sealed {
                return Run {
                    next_nonce,
                    available,
                    cannot_apply: Some(*nonce),
                };
            }
            next_nonce += 1;
        }
        Run {
            next_nonce,
            available,
            cannot_apply: None,
        }
    }

    /// Forgets nonces below `nonce` (taken by committed transactions); returns the ids of the
    /// unsealed ones among them (the caller evicts them).
    pub fn drop_below(&mut self, nonce: u64) -> Vec<Digest> {
        let kept = self.by_nonce.split_off(&nonce);
        let taken = std::mem::replace(&mut self.by_nonce, kept);
        taken
            .into_values()
            .filter(|entry| !entry.sealed)
            .map(|entry| entry.id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(byte: u8, amount: u64, sealed: bool) -> Entry {
        Entry {
            id: Digest([byte; 32]),
            need: amount,
            spend: amount,
            sealed,
        }
    }

    #[test]
    fn the_run_stops_at_gaps_and_at_unsealed_transactions_that_cannot_apply() {
        let committed = Account {
            balance: 100,
            nonce: 5,
        };
        let mut view = SenderView::default();
        assert_eq!(
            view.run(&committed),
            Run {
                next_nonce: 5,
                available: 100,
                cannot_apply: None
            }
        );
        view.by_nonce.insert(5, entry(1, 60, false));
        view.by_nonce.insert(7, entry(2, 10, false)); // gapped: not in the run
        assert_eq!(
            view.run(&committed),
            Run {
                next_nonce: 6,
                available: 40,
                cannot_apply: None
            }
        );
        // A sealed transaction that will fail still consumes its nonce; it spends nothing.
        view.by_nonce.insert(6, entry(3, 60, true));
        assert_eq!(
            view.run(&committed),
            Run {
                next_nonce: 8,
                available: 30,
                cannot_apply: None
            }
        );
        // An unsealed one that cannot apply ends the run and is named for eviction.
        view.by_nonce.insert(8, entry(4, 31, false));
        view.by_nonce.insert(9, entry(5, 1, false));
        assert_eq!(
            view.run(&committed),
            Run {
                next_nonce: 8,
                available: 30,
                cannot_apply: Some(8)
            }
        );
        assert_eq!(view.drop_below(7), vec![Digest([1; 32])]);
        assert_eq!(
            view.by_nonce.keys().copied().collect::<Vec<_>>(),
            vec![7, 8, 9]
        );
    }
}
