//! The serial log a device connector writes (`<phase>-serial.log`), cut into pieces for
//! the server: at most `SERIAL_CHUNK` bytes each, as the reference sends it, and never in
//! the middle of a UTF-8 character.

use std::io::Read;

/// The serial log is sent in pieces of this many bytes, as the reference does.
pub const SERIAL_CHUNK: usize = 1 << 20;

/// Reads `source` a piece of `chunk` bytes at a time and hands each piece to `send` as
/// text. A character cut by a read waits for the next; invalid bytes become U+FFFD. A
/// read error ends the log there (with a warning).
pub fn send_in_pieces(mut source: impl Read, chunk: usize, mut send: impl FnMut(&str)) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buffer = vec![0u8; chunk];
    loop {
        let read = match source.read(&mut buffer) {
            Ok(n) => n,
            Err(error) => {
                tracing::warn!("cannot read the serial log: {error}");
                0
            }
        };
        pending.extend_from_slice(&buffer[..read]);
        let cut = if read == 0 {
            pending.len()
        } else {
            match std::str::from_utf8(&pending) {
                Err(error) if error.error_len().is_none() => error.valid_up_to(),
                _ => pending.len(),
            }
        };
        let rest = pending.split_off(cut);
        if !pending.is_empty() {
            send(&String::from_utf8_lossy(&pending));
        }
        pending = rest;
        if read == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(bytes: &[u8], chunk: usize) -> Vec<String> {
        let mut sent = Vec::new();
        send_in_pieces(bytes, chunk, |text| sent.push(text.to_string()));
        sent
    }

    #[test]
    fn a_character_cut_by_a_read_waits_for_the_next_piece() {
        // "é" is two bytes: a 2-byte read would cut it after "a".
        assert_eq!(pieces("aébc".as_bytes(), 2), ["a", "éb", "c"]);
        assert_eq!(pieces("aébc".as_bytes(), 2).concat(), "aébc");
    }

    #[test]
    fn invalid_bytes_do_not_stop_the_log() {
        assert_eq!(pieces(b"ok\xffok", 64), ["ok\u{fffd}ok"]);
        assert!(pieces(b"", 64).is_empty());
    }
}
