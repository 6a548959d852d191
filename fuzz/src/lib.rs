//! Models the fuzz targets check the library against, written from the specifications rather
//! than from the library's code, so that a bug in the library is not copied into its oracle.
//!
//! - [`header`]: which credentials an `Authorization` header carries, from RFC 9110 and
//!   RFC 6750.
//! - [`key`]: whether bytes are a key of a format, with the checksum computed by `crc32fast` and
//!   a base62 encoding of its own, and SHA-256 from `sha2`'s streaming API.

pub mod header;
pub mod key;
