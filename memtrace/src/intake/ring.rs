//! Reading the `EVENTS` ring buffer from tokio.

use std::io;

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use super::decode::{decode, DecodeError, Decoded};

/// The ring buffer, registered with tokio so the agent sleeps until the
/// kernel side wakes it (it does so once a batch has built up; the session
/// also drains on a short timer).
pub struct EventSource {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl EventSource {
    pub fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        // SAFETY: the ring buffer owns its map's descriptor, and the AsyncFd
        // owns the ring buffer, so the descriptor outlives the registration.
        let ring = unsafe { AsyncFd::register(ring) }.map_err(|err| err.into_parts().1)?;
        Ok(Self { ring })
    }

    /// Waits until the kernel signals records.
    pub async fn readable(&mut self) -> io::Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        // Edge-triggered: only forget the readiness once drained, which the
        // caller does next; clearing it here is safe because every wake-up
        // is followed by a full drain.
        guard.clear_ready();
        Ok(())
    }
}

/// What takes each record drained: its bytes as the kernel wrote them, and
/// what they decode to.
pub type Sink<'a> = dyn FnMut(&[u8], Result<Decoded, DecodeError>) + 'a;

/// Where records come from: the ring buffer, or a capture played back.
pub trait Records {
    /// Decodes every record waiting, in order, handing each to `sink`
    /// with its bytes as the kernel wrote them (which `memtrace record`
    /// keeps).
    fn drain(&mut self, sink: &mut Sink<'_>);
}

impl Records for EventSource {
    fn drain(&mut self, sink: &mut Sink<'_>) {
        let ring = self.ring.get_mut();
        while let Some(item) = ring.next() {
            sink(&item, decode(&item));
        }
    }
}
