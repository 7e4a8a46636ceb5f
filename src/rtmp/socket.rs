//! The TCP socket under a server connection (RTMP, or RTMPS under its TLS layer): the
//! socket options the connection task sets (receive low-water mark, send buffer) and a read
//! of what is queued that does not wait. Best effort where the platform lacks an option (a
//! failure only costs CPU); no protocol knowledge here.

use std::io;

use tokio::net::TcpStream;

/// Whether this platform has the receive low-water mark (and so publishing connections
/// use it and the drain deadline).
pub const LOWAT: bool = cfg!(target_os = "linux");

/// Sets the socket's receive low-water mark: its task is woken once this many bytes are
/// queued (best effort).
#[cfg(target_os = "linux")]
pub fn set_rcvlowat(socket: &TcpStream, bytes: usize) {
    set_int_option(socket, libc::SO_RCVLOWAT, bytes, "SO_RCVLOWAT");
}

/// Caps the kernel's send buffer of the socket (best effort).
#[cfg(target_os = "linux")]
pub fn set_sndbuf(socket: &TcpStream, bytes: usize) {
    set_int_option(socket, libc::SO_SNDBUF, bytes, "SO_SNDBUF");
}

#[cfg(target_os = "linux")]
fn set_int_option(socket: &TcpStream, option: libc::c_int, bytes: usize, name: &str) {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: a valid, open socket descriptor owned by `socket`, and a c_int option value
    // whose size is passed alongside it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), option = name, "socket option not set");
    }
}

/// Reads what is queued without waiting (`WouldBlock` when nothing is). Not
/// `TcpStream::try_read`: tokio answers that from its readiness cache, which stays "not
/// ready" while fewer bytes than the low-water mark are queued.
#[cfg(target_os = "linux")]
pub fn recv_queued(socket: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid, open socket descriptor, and a writable buffer of the length passed.
    let n = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

#[cfg(not(target_os = "linux"))]
pub fn set_rcvlowat(_socket: &TcpStream, _bytes: usize) {}

#[cfg(not(target_os = "linux"))]
pub fn set_sndbuf(_socket: &TcpStream, _bytes: usize) {}

#[cfg(not(target_os = "linux"))]
pub fn recv_queued(_socket: &TcpStream, _buf: &mut [u8]) -> io::Result<usize> {
    Err(io::ErrorKind::WouldBlock.into())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// What is below the mark is read without waiting; `WouldBlock` when nothing is queued,
    /// `Ok(0)` at the end of the stream.
    #[tokio::test]
    async fn recv_queued_takes_what_is_below_the_mark() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let e = recv_queued(&s, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        set_rcvlowat(&s, 32 * 1024);
        let sent: Vec<u8> = (0..300u32).map(|i| (i * 7 % 251) as u8).collect();
        c.write_all(&sent).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // 300 bytes, far below the mark: read at once all the same.
        let n = recv_queued(&s, &mut buf).unwrap();
        assert_eq!(&buf[..n], &sent[..]);
        drop(c);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(
            recv_queued(&s, &mut buf).unwrap(),
            0,
            "the end of the stream"
        );
    }
}
