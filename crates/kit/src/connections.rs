//! Clients for long-lived watches, each carrying a bounded number of them. With an HTTP/2 client, one
//! connection multiplexes every request of that client; the API server caps the streams of a connection
//! (250 unless configured), and the client queues requests beyond the cap instead of opening another
//! connection. So a thousand tenants' watches are spread over clients of [`Connections::batched`], each
//! with its own connection and at most `per` watches on it.

use std::fmt;
use std::sync::{Arc, Mutex};

use kube::Client;

type Make = Arc<dyn Fn() -> Client + Send + Sync>;

/// Hands out a client per watch; see the module documentation.
pub struct Connections {
    make: Make,
    per: usize,
    /// Each client made so far and how many watches it carries now.
    open: Mutex<Vec<(Client, usize)>>,
}

impl fmt::Debug for Connections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connections")
            .field("per", &self.per)
            .field("load", &self.load())
            .finish_non_exhaustive()
    }
}

impl Connections {
    /// Every watch on `client` (kube's own client speaks HTTP/1.1: each watch holds a connection of its own).
    #[must_use]
    pub fn one(client: Client) -> Arc<Self> {
        Self::batched(usize::MAX, move || client.clone())
    }

    /// A new client from `make` for every `per` watches.
    #[must_use]
    pub fn batched(per: usize, make: impl Fn() -> Client + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            make: Arc::new(make),
            per: per.max(1),
            open: Mutex::default(),
        })
    }

    /// A client for one more watch, held until the [`Seat`] is dropped: the least loaded client with room,
    /// or a new one.
    #[must_use]
    pub fn take(self: &Arc<Self>) -> (Client, Seat) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let index = match open
            .iter()
            .enumerate()
            .filter(|(_, (_, n))| *n < self.per)
            .min_by_key(|(_, (_, n))| *n)
        {
            Some((i, _)) => i,
            None => {
                open.push(((self.make)(), 0));
                open.len() - 1
            }
        };
        open[index].1 += 1;
        let seat = Seat {
            connections: self.clone(),
            index,
        };
        (open[index].0.clone(), seat)
    }

    /// Watches per client, in the order the clients were made.
    #[must_use]
    pub fn load(&self) -> Vec<usize> {
        self.open
            .lock()
            .map(|o| o.iter().map(|(_, n)| *n).collect())
            .unwrap_or_default()
    }
}

/// One watch's place on a client; dropping it (the watch ended or was aborted) frees the place.
pub struct Seat {
    connections: Arc<Connections>,
    index: usize,
}

impl Drop for Seat {
    fn drop(&mut self) {
        if let Ok(mut open) = self.connections.open.lock()
            && let Some((_, n)) = open.get_mut(self.index)
        {
            *n = n.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn client() -> Client {
        Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap()
    }

    #[tokio::test]
    async fn a_client_is_made_per_batch_and_a_freed_place_is_used_again() {
        let made = Arc::new(AtomicUsize::new(0));
        let counter = made.clone();
        let connections = Connections::batched(100, move || {
            counter.fetch_add(1, Ordering::Relaxed);
            client()
        });
        let mut seats: Vec<Seat> = (0..250).map(|_| connections.take().1).collect();
        assert_eq!(made.load(Ordering::Relaxed), 3);
        assert_eq!(connections.load(), vec![100, 100, 50]);

        seats.drain(..10);
        assert_eq!(connections.load(), vec![90, 100, 50]);
        // The least loaded client with room gets the next watch.
        seats.push(connections.take().1);
        assert_eq!(connections.load(), vec![90, 100, 51]);
        drop(seats);
        assert_eq!(connections.load(), vec![0, 0, 0]);
        assert_eq!(
            made.load(Ordering::Relaxed),
            3,
            "no client made while one had room"
        );
    }

    #[tokio::test]
    async fn one_client_carries_every_watch() {
        let connections = Connections::one(client());
        let seats: Vec<Seat> = (0..1000).map(|_| connections.take().1).collect();
        assert_eq!(connections.load(), vec![1000]);
        drop(seats);
    }
}
