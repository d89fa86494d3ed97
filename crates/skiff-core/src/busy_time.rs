//! The running integral of a revision's concurrency over time: the one reading the
//! router's pool keeps and the autoscaler consumes, so neither crate defines it for the
//! other. Pure data: the pool owns the clock it is read on, the scaler the arithmetic.

/// The running integral of a revision's concurrency (requests in flight plus queued)
/// over time, on the clock of whoever keeps it (the router's pool: nanoseconds since the
/// pool was made). Two readings give the mean concurrency between them, including
/// requests that came and went in between, as Knative's queue-proxy reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusyTime {
    /// Concurrency × nanoseconds, summed since the clock's zero.
    pub request_nanos: u128,
    /// When this was read, in nanoseconds on the same clock.
    pub at_nanos: u64,
    /// The first instant since the previous sample at which concurrency was above zero
    /// (the previous sample itself, if it was then); `None` if it stayed zero. The
    /// demand between two readings lies after it.
    pub busy_from_nanos: Option<u64>,
}
