//! One inotify watch on the logs directory, shared by every `skiff logs --follow`: it
//! tells which files were written, created, renamed in or closed, so that followers read
//! when there is something to read and never poll. It lives while a follower holds it.
//!
//! It says which names changed, not what they hold: reading is the follower's.

use skiff_kernel::dirwatch::{DirEvent, DirWatch};
use std::io;
use std::path::Path;
use tokio::sync::broadcast;

/// Changes a follower may fall behind by before it is told to look at everything.
const BACKLOG: usize = 1024;

/// What happened in the logs directory.
pub type Change = DirEvent;

/// The watch; dropping the last handle ends it.
pub struct LogWatch {
    changes: broadcast::Sender<Change>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LogWatch {
    fn drop(&mut self) {
        // The task owns the inotify descriptor: ending it closes the descriptor.
        self.task.abort();
    }
}

impl LogWatch {
    /// Watches `dir`. Must be called within a tokio runtime.
    pub fn start(dir: &Path) -> io::Result<LogWatch> {
        let watch = DirWatch::new(dir)?;
        let (changes, _) = broadcast::channel(BACKLOG);
        let task = tokio::spawn(relay(watch, changes.clone()));
        Ok(LogWatch { changes, task })
    }

    /// Changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }
}

async fn relay(mut watch: DirWatch, changes: broadcast::Sender<Change>) {
    let mut events = Vec::new();
    loop {
        if let Err(e) = watch.next_events(&mut events).await {
            // Followers see the channel close and look for themselves.
            tracing::warn!("watching the logs directory: {e}");
            return;
        }
        for event in events.drain(..) {
            // No follower listening is not an error: the last one just left.
            let _ = changes.send(event);
        }
    }
}
