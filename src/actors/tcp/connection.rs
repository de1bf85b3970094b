//! Moving frames over a socket: a [`FrameReader`] that assembles frames from whatever the
//! socket delivers, a [`FrameWriter`] that batches them out, and [`Connection`], the two halves
//! of one TCP stream, inside TLS when the settings ask for it (`tls.rs`). The layout of a frame is `frame.rs`'s business; this file only moves
//! bytes, and guards against peers that announce huge frames or stop mid-frame.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{timeout_at, Instant};

use super::admission::{FrameBudget, UNCOUNTED_FRAME};
use super::frame::{Frame, FrameError};
use super::settings::TcpSettings;

/// The buffer is topped up to at least this much free space before each read.
const READ_CHUNK: usize = 16 << 10;

/// Reads whole frames from a byte stream.
pub(crate) struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    max_frame: usize,
    frame_timeout: Duration,
    /// When the first byte of the frame being assembled arrived.
    partial_since: Option<Instant>,
    /// Where frames over [`UNCOUNTED_FRAME`] get their memory (`None`: anywhere).
    budget: Option<FrameBudget>,
    /// The share of the budget the frame being assembled holds.
    reserved: Option<OwnedSemaphorePermit>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader that accepts frames of at most `max_frame` bytes and gives a started frame
    /// `frame_timeout` to arrive in full.
    pub(crate) fn new(io: R, max_frame: usize, frame_timeout: Duration) -> Self {
        FrameReader {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            max_frame,
            frame_timeout,
            partial_since: None,
            budget: None,
            reserved: None,
        }
    }

    /// Makes frames over [`UNCOUNTED_FRAME`] wait for their length's worth of `budget`
    /// before more than their first bytes are read.
    pub(crate) fn set_budget(&mut self, budget: FrameBudget) {
        self.budget = Some(budget);
    }

    /// Changes the largest frame accepted from now on (the handshake uses a small one).
    pub(crate) fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }

    /// The next frame; `Ok(None)` when the peer closed the connection between frames.
    ///
    /// Cancel-safe: bytes read before a cancellation stay buffered for the next call, so it
    /// can sit in a `select!`. Waiting between frames has no limit; a frame that has started
    /// must be complete within the frame timeout.
    pub(crate) async fn read_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            if let Some(frame) = Frame::parse(&mut self.buf, self.max_frame)? {
                self.partial_since = None;
                self.reserved = None;
                return Ok(Some(frame));
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            let read = if self.buf.is_empty() {
                self.io.read_buf(&mut self.buf).await?
            } else {
                let since = *self.partial_since.get_or_insert_with(Instant::now);
                let deadline = since + self.frame_timeout;
                self.reserve_budget(deadline).await?;
                timeout_at(deadline, self.io.read_buf(&mut self.buf))
                    .await
                    .map_err(|_| FrameError::Stalled)??
            };
            if read == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::ClosedMidFrame)
                };
            }
        }
    }
}

impl<R> FrameReader<R> {
    /// Takes the budget share of a large frame whose length has arrived, once.
    async fn reserve_budget(&mut self, deadline: Instant) -> Result<(), FrameError> {
        let (Some(budget), None) = (&self.budget, &self.reserved) else {
            return Ok(());
        };
        let Some(len) = Frame::announced_len(&self.buf) else {
            return Ok(());
        };
        if len <= UNCOUNTED_FRAME as u64 {
            return Ok(());
        }
        let bytes = usize::try_from(len).unwrap_or(usize::MAX);
        let share = budget.reserve(bytes, deadline).await;
        self.reserved = Some(share.map_err(|_| FrameError::OverBudget { len })?);
        Ok(())
    }
}

/// Writes frames to a byte stream through a buffer.
pub(crate) struct FrameWriter<W> {
    io: BufWriter<W>,
    max_frame: usize,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer that refuses to send frames over `max_frame` bytes.
    pub(crate) fn new(io: W, max_frame: usize) -> Self {
        FrameWriter {
            io: BufWriter::new(io),
            max_frame,
        }
    }

    /// Buffers one frame (call [`FrameWriter::flush`] to send).
    pub(crate) async fn write_frame(&mut self, frame: &Frame) -> Result<(), FrameError> {
        let bytes = frame.encode(self.max_frame)?;
        self.io.write_all(&bytes).await?;
        Ok(())
    }

    /// Sends everything buffered.
    pub(crate) async fn flush(&mut self) -> Result<(), FrameError> {
        self.io.flush().await?;
        Ok(())
    }

    /// Writes the frames queued on `queue` until it closes or the socket fails. Frames that
    /// are queued together go out in one flush.
    pub(crate) async fn drain(
        mut self,
        mut queue: mpsc::Receiver<Frame>,
    ) -> Result<(), FrameError> {
        while let Some(frame) = queue.recv().await {
            self.write_frame(&frame).await?;
            while let Ok(frame) = queue.try_recv() {
                self.write_frame(&frame).await?;
            }
            self.flush().await?;
        }
        Ok(())
    }
}

/// The reading half of a connection, plain or inside TLS.
pub(crate) type ReadSide = Box<dyn AsyncRead + Unpin + Send>;
/// The writing half.
pub(crate) type WriteSide = Box<dyn AsyncWrite + Unpin + Send>;

/// Both halves of one TCP connection.
pub(crate) struct Connection {
    /// Incoming frames.
    pub reader: FrameReader<ReadSide>,
    /// Outgoing frames.
    pub writer: FrameWriter<WriteSide>,
}

impl Connection {
    /// The connection this side dialled on `stream`: inside TLS (this side's handshake done)
    /// when `settings` has it, else plain.
    pub(crate) async fn dialled(
        stream: TcpStream,
        settings: &TcpSettings,
    ) -> Result<Connection, String> {
        Self::prepare(&stream)?;
        let (read, write): (ReadSide, WriteSide) = match &settings.tls {
            Some(tls) => {
                let (read, write) = tokio::io::split(tls.connect(stream).await?);
                (Box::new(read), Box::new(write))
            }
            None => {
                let (read, write) = stream.into_split();
                (Box::new(read), Box::new(write))
            }
        };
        Ok(Self::from_halves(read, write, settings))
    }

    /// The connection this side accepted on `stream`, inside TLS when `settings` has it.
    pub(crate) async fn accepted(
        stream: TcpStream,
        settings: &TcpSettings,
    ) -> Result<Connection, String> {
        Self::prepare(&stream)?;
        let (read, write): (ReadSide, WriteSide) = match &settings.tls {
            Some(tls) => {
                let (read, write) = tokio::io::split(tls.accept(stream).await?);
                (Box::new(read), Box::new(write))
            }
            None => {
                let (read, write) = stream.into_split();
                (Box::new(read), Box::new(write))
            }
        };
        Ok(Self::from_halves(read, write, settings))
    }

    /// Turns Nagle's algorithm off: calls are small and latency-bound, and the writer
    /// batches on its own.
    fn prepare(stream: &TcpStream) -> Result<(), String> {
        stream.set_nodelay(true).map_err(|e| e.to_string())
    }

    fn from_halves(read: ReadSide, write: WriteSide, settings: &TcpSettings) -> Connection {
        Connection {
            reader: FrameReader::new(read, settings.max_frame, settings.frame_timeout),
            writer: FrameWriter::new(write, settings.max_frame),
        }
    }

    /// Sends one frame right away.
    pub(crate) async fn send(&mut self, frame: &Frame) -> Result<(), FrameError> {
        self.writer.write_frame(frame).await?;
        self.writer.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::tcp::frame::Outcome;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_frame_times_out_but_an_idle_connection_does_not() {
        let (client, server) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(server, 1 << 20, Duration::from_secs(5));
        let mut client = client;
        // Idle for longer than the frame timeout: still fine.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let frame = Frame::Reply {
            id: 1,
            outcome: Outcome::Unavailable,
        };
        let bytes = frame.encode(1 << 20).expect("encode");
        client.write_all(&bytes).await.expect("write");
        assert_eq!(reader.read_frame().await.expect("read"), Some(frame));
        // Half a frame, then silence.
        client.write_all(&bytes[..3]).await.expect("write");
        assert!(matches!(
            reader.read_frame().await,
            Err(FrameError::Stalled)
        ));
    }

    #[tokio::test]
    async fn a_close_mid_frame_is_an_error_and_between_frames_is_not() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(server, 1 << 20, Duration::from_secs(5));
        client.write_all(&[0, 0, 0, 9, 1]).await.expect("write");
        drop(client);
        assert!(matches!(
            reader.read_frame().await,
            Err(FrameError::ClosedMidFrame)
        ));
        let (client, server) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(server, 1 << 20, Duration::from_secs(5));
        drop(client);
        assert!(matches!(reader.read_frame().await, Ok(None)));
    }

    /// A reader of `timeout`'s frames on `budget`, and the stream that feeds it.
    fn budgeted(
        budget: &FrameBudget,
        timeout: Duration,
    ) -> (
        tokio::io::DuplexStream,
        FrameReader<tokio::io::DuplexStream>,
    ) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut reader = FrameReader::new(server, 4 << 20, timeout);
        reader.set_budget(budget.clone());
        (client, reader)
    }

    #[tokio::test(start_paused = true)]
    async fn large_frames_share_a_budget_and_small_ones_never_wait() {
        let budget = FrameBudget::new(2 << 20, 2 << 20);
        // A holds the whole budget: it announced 2 MiB and sent a little.
        let (mut a, mut holder) = budgeted(&budget, Duration::from_secs(60));
        a.write_all(&(2u32 << 20).to_be_bytes())
            .await
            .expect("write");
        a.write_all(&[0; 1000]).await.expect("write");
        let holding = tokio::spawn(async move { holder.read_frame().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(budget.available(), 0);
        // B's large frame finds no room before its own frame timeout.
        let (mut b, mut waiter) = budgeted(&budget, Duration::from_secs(1));
        b.write_all(&(1u32 << 20).to_be_bytes())
            .await
            .expect("write");
        b.write_all(&[0; 1000]).await.expect("write");
        let started = Instant::now();
        assert!(matches!(
            waiter.read_frame().await,
            Err(FrameError::OverBudget { len }) if len == 1 << 20
        ));
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        // C's small frame is read at once.
        let (mut c, mut small) = budgeted(&budget, Duration::from_secs(1));
        let frame = Frame::Reply {
            id: 7,
            outcome: Outcome::Ok(vec![1; 60 << 10]),
        };
        c.write_all(&frame.encode(4 << 20).expect("encode"))
            .await
            .expect("write");
        assert_eq!(small.read_frame().await.expect("read"), Some(frame));
        // Once A's frame is over (here: it stalls out), the budget is whole again.
        assert!(matches!(
            holding.await.expect("task"),
            Err(FrameError::Stalled)
        ));
        drop(a);
        assert_eq!(budget.available(), 2 << 20);
    }
}
