//! The serial-console logger: while a stage runs, everything the device's console server
//! (ser2net on `serial_host:serial_port`) sends is appended to `<phase>-serial.log`,
//! which the agent uploads after the phase. It reconnects every 30 s if the connection
//! drops, and says so once.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::context::Context;
use super::log::Log;

const RECONNECT_EVERY: Duration = Duration::from_secs(30);

pub struct SerialLogger {
    stop: Arc<AtomicBool>,
}

impl SerialLogger {
    /// Starts logging to `file` if the config names a console server; else does nothing.
    pub fn start(context: &Context, file: &str) -> SerialLogger {
        let stop = Arc::new(AtomicBool::new(false));
        let (Some(host), Some(port)) = (
            context.config_text("serial_host"),
            context.config_text("serial_port"),
        ) else {
            return SerialLogger { stop };
        };
        let (flag, log, file) = (stop.clone(), context.log.clone(), file.to_string());
        std::thread::spawn(move || capture(&format!("{host}:{port}"), &file, &flag, &log));
        SerialLogger { stop }
    }
}

impl Drop for SerialLogger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn capture(address: &str, file: &str, stop: &AtomicBool, log: &Log) {
    let mut reported = false;
    while !stop.load(Ordering::Relaxed) {
        match TcpStream::connect(address) {
            Ok(mut stream) => {
                log.info("Successfully connected to serial logging server");
                let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                let Ok(mut out) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(file)
                else {
                    return;
                };
                let mut buffer = [0u8; 4096];
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    match stream.read(&mut buffer) {
                        Ok(0) => {
                            log.error("Serial log connection closed - attempts to reconnect will be made in the background");
                            break;
                        }
                        Ok(n) => {
                            let _ = out.write_all(&buffer[..n]);
                            let _ = out.flush();
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => break,
                    }
                }
            }
            Err(_) if !reported => {
                log.error(
                    "Error connecting to serial logging server. Retrying in the background...",
                );
                reported = true;
            }
            Err(_) => {}
        }
        let mut waited = Duration::ZERO;
        while waited < RECONNECT_EVERY && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            waited += Duration::from_millis(200);
        }
    }
}
