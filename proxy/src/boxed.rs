//! [`Boxed`]: a future on the heap.

/// A future on the heap. The deep paths a session rarely suspends in
/// (store calls, catalog loads, settings round trips, error exits) return
/// one, so that they do not size every session's state machine: an idle
/// session would otherwise carry their largest state (about 12 KiB).
pub type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
