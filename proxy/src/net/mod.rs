//! The wire layer: byte streams, frames and the few messages pgstash builds
//! itself. Everything else is forwarded as the raw bytes it arrived as.

pub mod body;
pub mod frame;
pub mod message;
pub mod startup;
pub mod stream;

pub use frame::{Frame, FrameReader, NetError};
pub use stream::Stream;
