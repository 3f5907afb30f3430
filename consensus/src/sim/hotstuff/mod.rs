//! HotStuff's Byzantine behaviours beyond silence and twins, one module each.

mod bad_payload;
mod equivocate;
mod flood;
mod poison;

pub(in crate::sim) use equivocate::Withheld;
