//! TensorBoard event files with the rows' headline scalars (`[analysis] tensorboard = true`): the route into
//! TensorBoard and, through `wandb sync --sync-tensorboard`, into Weights & Biases.
//!
//! The format is TensorFlow's record file of `Event` protocol buffers, small enough to write by hand: each
//! record is `u64` length (little endian), the masked CRC-32C of those 8 bytes, the bytes, and their masked
//! CRC-32C (`tensorflow/core/lib/io/record_writer.cc`); each event holds the wall time, the step and a
//! `Summary` of `(tag, simple_value)` pairs (`tensorflow/core/util/event.proto`, `summary.proto`). The first
//! record is the `brain.Event:2` version event TensorBoard looks for.
//!
//! The JSONL rows are the source of truth: the file is rebuilt from them when a run (re)starts, then one
//! event is appended and flushed per row, so a kill between the row and its event loses nothing and a resume
//! writes no step twice.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use host::files::write_atomic;

use crate::error::AnalysisError;
use crate::row::Row;
use crate::windows::is_tracked;

/// CRC-32C (Castagnoli), the checksum of TensorFlow's record format.
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// The checksum as a record stores it: rotated right by 15 bits plus a constant (TensorFlow's `crc32c::Mask`),
/// so that a CRC over data that contains CRCs stays well distributed.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = CRC32C.checksum(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One record: length, its masked CRC, the data, its masked CRC.
fn record(data: &[u8]) -> Vec<u8> {
    let length = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&length);
    out.extend_from_slice(&masked_crc(&length).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A length-delimited field (wire type 2): tag, length, bytes.
fn bytes_field(field: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint(field << 3 | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// An `Event` with `wall_time` (field 1, double) and `step` (field 2, int64), and either the file version
/// (field 3) or a summary (field 5) of `Summary.Value`s (field 1), each a tag (field 1) and a `simple_value`
/// (field 2, float).
fn event(wall_time: f64, step: u64, body: EventBody) -> Vec<u8> {
    let mut out = vec![0x09]; // field 1, 64-bit
    out.extend_from_slice(&wall_time.to_le_bytes());
    varint(2 << 3, &mut out); // field 2, varint
    varint(step, &mut out);
    match body {
        EventBody::FileVersion => bytes_field(3, b"brain.Event:2", &mut out),
        EventBody::Scalars(scalars) => {
            let mut summary = vec![];
            for (tag, value) in scalars {
                let mut item = vec![];
                bytes_field(1, tag.as_bytes(), &mut item);
                item.push(0x15); // field 2, 32-bit
                item.extend_from_slice(&(*value as f32).to_le_bytes());
                bytes_field(1, &item, &mut summary);
            }
            bytes_field(5, &summary, &mut out);
        }
    }
    out
}

enum EventBody<'a> {
    FileVersion,
    Scalars(&'a [(String, f64)]),
}

/// The headline scalars of a row, tagged `family/rest-of-the-dotted-path` (`heads/L1H1.scores.induction_score`,
/// so TensorBoard groups them by family and the tag with its first `/` made a `.` is the pandas column):
/// the training loss and learning rate, and every series the birth-window detector examines (behavior, eval,
/// probe accuracy and selectivity, head scores and ablation effects, MLP ablation effects, CKA).
pub fn headline_scalars(row: &Row) -> Vec<(String, f64)> {
    let mut scalars = vec![("train/lr".to_owned(), row.lr)];
    if let Some(loss) = row.train_loss {
        scalars.push(("train/loss".to_owned(), f64::from(loss)));
    }
    for (path, value) in row.series() {
        if is_tracked(&path) {
            scalars.push((path.replacen('.', "/", 1), value));
        }
    }
    scalars
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// The event file of a run, appended one event per row and flushed.
pub struct TensorBoardWriter {
    path: PathBuf,
    file: File,
}

impl TensorBoardWriter {
    /// Writes `path` anew from the version event and `rows` (those already in the JSONL), then opens it for
    /// appending.
    pub fn open(path: &Path, rows: &[Row]) -> Result<Self, AnalysisError> {
        let io = |e| AnalysisError::io(path, e);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| AnalysisError::io(dir, e))?;
        }
        let wall = now();
        let mut bytes = record(&event(wall, 0, EventBody::FileVersion));
        for row in rows {
            let scalars = headline_scalars(row);
            bytes.extend(record(&event(wall, row.step, EventBody::Scalars(&scalars))));
        }
        write_atomic(path, &bytes)?;
        let file = OpenOptions::new().append(true).open(path).map_err(io)?;
        Ok(Self {
            path: path.to_owned(),
            file,
        })
    }

    /// Appends the row's event and flushes it to the file.
    pub fn write(&mut self, row: &Row) -> Result<(), AnalysisError> {
        let scalars = headline_scalars(row);
        let bytes = record(&event(now(), row.step, EventBody::Scalars(&scalars)));
        self.file
            .write_all(&bytes)
            .and_then(|()| self.file.flush())
            .map_err(|e| AnalysisError::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // CRC-32C of the ASCII digits "123456789" is 0xE3069283 (RFC 3720, appendix B.4).
        assert_eq!(CRC32C.checksum(b"123456789"), 0xE306_9283);
        // Masked: rotate right 15 → 0x2507_C60D, plus 0xa282_ead8 → 0xC78A_B0E5.
        assert_eq!(masked_crc(b"123456789"), 0xC78A_B0E5);
    }

    #[test]
    fn varints_are_little_endian_base_128() {
        // 300 = 0b1_0010_1100 → 0xAC 0x02 (the protobuf documentation's example).
        let mut out = vec![];
        varint(300, &mut out);
        assert_eq!(out, vec![0xAC, 0x02]);
    }

    #[test]
    fn a_scalar_event_encodes_field_by_field() {
        let scalars = [("a/b".to_owned(), 0.5)];
        let bytes = event(1.0, 3, EventBody::Scalars(&scalars));
        let mut expected = vec![0x09];
        expected.extend_from_slice(&1.0f64.to_le_bytes());
        expected.extend_from_slice(&[0x10, 3]); // step
        // summary (field 5, 12 bytes): value (field 1, 10 bytes): tag "a/b", simple_value 0.5f32.
        expected.extend_from_slice(&[0x2A, 12, 0x0A, 10, 0x0A, 3, b'a', b'/', b'b', 0x15]);
        expected.extend_from_slice(&0.5f32.to_le_bytes());
        assert_eq!(bytes, expected);
    }

    #[test]
    fn a_record_frames_its_data_with_length_and_checksums() {
        let framed = record(b"xyz");
        assert_eq!(&framed[..8], &3u64.to_le_bytes());
        assert_eq!(
            &framed[8..12],
            &masked_crc(&3u64.to_le_bytes()).to_le_bytes()
        );
        assert_eq!(&framed[12..15], b"xyz");
        assert_eq!(&framed[15..], &masked_crc(b"xyz").to_le_bytes());
    }
}
