//! Batch mode in the CLI (`generate --batch`, `afterimage batch status|cancel`): it
//! builds the provider's batch backends and the batcher, says what the run will take,
//! shows rounds and batches as they go, and leaves or cancels batches on a stop.

mod backends;

pub(crate) use backends::{Keyed, backends, pinned};
