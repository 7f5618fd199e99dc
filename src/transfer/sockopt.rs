//! The socket calls the standard library lacks, each behind one safe
//! wrapper: integer socket options ([`set_int`]) for big buffers and
//! "don't fragment", and waiting on one socket with `poll(2)` ([`wait`]).
//! The only `unsafe` of the UDP transfer lives here.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Socket buffers asked for (the kernel may cap them).
const SOCKET_BUFFER: libc::c_int = 8 << 20;

/// Set the integer option `opt` at `level` on `sock` to `value`.
pub fn set_int(
    sock: &impl AsRawFd,
    level: libc::c_int,
    opt: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt on a descriptor the borrow keeps open, with a
    // pointer to a c_int that lives for the call and its exact length.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            opt,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Ask for big socket buffers (beyond the sysctl limit when privileged);
/// returns the receive buffer size obtained.
pub fn size_buffers(sock: &UdpSocket) -> u64 {
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if set_int(sock, libc::SOL_SOCKET, force, SOCKET_BUFFER).is_err() {
            let _ = set_int(sock, libc::SOL_SOCKET, plain, SOCKET_BUFFER);
        }
    }
    socket2::SockRef::from(sock)
        .recv_buffer_size()
        .map(|n| n as u64 / 2)
        .unwrap_or(0)
}

/// Set "don't fragment" so that an oversized probe fails instead of being
/// split: the datagram size the path carries is then found by probing.
pub fn forbid_fragments(sock: &UdpSocket, v6: bool) {
    let _ = if v6 {
        set_int(
            sock,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
        )
    } else {
        set_int(
            sock,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )
    };
}

/// Wait until the socket is readable (or writable, if asked) or `timeout` passes.
pub fn wait(sock: &UdpSocket, writable: bool, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN | if writable { libc::POLLOUT } else { 0 },
        revents: 0,
    };
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: poll on one pollfd that lives for the call, for a descriptor
    // the borrow keeps open.
    unsafe {
        libc::poll(&mut pfd, 1, ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_set_and_bad_ones_are_errors() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(size_buffers(&sock) > 0);
        assert!(set_int(&sock, libc::SOL_SOCKET, libc::SO_RCVBUF, 1 << 16).is_ok());
        assert!(set_int(&sock, libc::SOL_SOCKET, -1, 1).is_err());
        // Nothing to read: the wait ends with its timeout.
        wait(&sock, false, Duration::from_millis(1));
    }
}
