//! PBFT's Byzantine behaviours beyond silence and twins, one module each. (`poison` is
//! HotStuff's alone: a PBFT PREPARE or COMMIT signs nothing but (view, sequence number, block),
//! and is counted under exactly those, so there is no other data to poison.)

mod bad_payload;
mod equivocate;
mod flood;
