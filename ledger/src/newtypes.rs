//! Counters named after the papers, so a view can never be passed where a height is meant.

use serde::{Deserialize, Serialize};

macro_rules! counter {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The next value (saturating: a counter at u64::MAX stays there).
            pub fn next(self) -> Self {
                $name(self.0.saturating_add(1))
            }

            /// The previous value, or `None` at zero.
            pub fn prev(self) -> Option<Self> {
                self.0.checked_sub(1).map($name)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

counter!(
    /// A reconfiguration period with one fixed validator set.
    Epoch
);
counter!(
    /// A HotStuff view (round), or a PBFT view.
    View
);
counter!(
    /// A block's position in the chain; genesis state is height 0, the first block height 1.
    Height
);
counter!(
    /// A PBFT sequence number.
    SeqNum
);
