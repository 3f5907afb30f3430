//! A consensus message, decoded and then handed to a freshly started engine of each protocol
//! (4 validators, real BLS), as the node does once the transport has authenticated the sender:
//! whatever it holds, the engine answers with actions and never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use quorate_consensus::sim::{CryptoMode, Setup};
use quorate_consensus::{Input, Message};
use quorate_fuzz::canonical;
use quorate_genesis::Protocol;
use std::sync::OnceLock;

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| Setup::new(4, CryptoMode::Real).expect("a 4-validator setup"))
}

fuzz_target!(|data: &[u8]| {
    let Some((from, bytes)) = data.split_first() else {
        return;
    };
    let Some(message) = canonical::<Message>(bytes) else {
        return;
    };
    let protocol = match message {
        Message::HotStuff(_) => Protocol::HotStuff,
        Message::Pbft(_) => Protocol::Pbft,
    };
    // Validator 0 receives it from one of the others.
    let mut engine = setup().fresh_engine(protocol, 0).expect("engine");
    let _ = engine.start();
    let _ = engine.handle(Input::Message {
        from: 1 + usize::from(*from % 3),
        message,
    });
    let _ = engine.status();
});
