//! Bounded CBOR helpers on top of `minicbor`'s slice decoder.
//!
//! `minicbor` decodes from a borrowed slice: a byte or text string is returned as a sub-slice
//! after its length was checked against the input left, so a header claiming a 4 GB string fails
//! with "end of input" and allocates nothing. What it does not bound is nesting and indefinite
//! lengths; [`skip_item`] adds both limits. CTAP2 requires definite lengths, so refusing
//! indefinite ones costs no real authenticator.

use minicbor::Decoder;
use minicbor::data::Type;

use super::Fido2Error;

/// Skips one data item, refusing indefinite lengths and containers nested deeper than `depth`.
pub(super) fn skip_item(
    d: &mut Decoder<'_>,
    depth: u8,
    what: &'static str,
) -> Result<(), Fido2Error> {
    let bad = |_| Fido2Error::Malformed(what);
    match d.datatype().map_err(bad)? {
        Type::Array => {
            let n = definite(d.array().map_err(bad)?, what)?;
            let inner = nested(depth, what)?;
            // Each item takes at least one byte, so a huge claimed count ends at the input's end.
            for _ in 0..n {
                skip_item(d, inner, what)?;
            }
        }
        Type::Map => {
            let n = definite(d.map().map_err(bad)?, what)?;
            let inner = nested(depth, what)?;
            for _ in 0..n {
                skip_item(d, inner, what)?;
                skip_item(d, inner, what)?;
            }
        }
        Type::Tag => {
            d.tag().map_err(bad)?;
            skip_item(d, nested(depth, what)?, what)?;
        }
        Type::BytesIndef | Type::StringIndef | Type::ArrayIndef | Type::MapIndef => {
            return Err(Fido2Error::Malformed(what));
        }
        Type::Break | Type::Unknown(_) => return Err(Fido2Error::Malformed(what)),
        // Scalars and definite-length strings: no nesting, so the crate's own skip is bounded.
        Type::Bool
        | Type::Null
        | Type::Undefined
        | Type::U8
        | Type::U16
        | Type::U32
        | Type::U64
        | Type::I8
        | Type::I16
        | Type::I32
        | Type::I64
        | Type::Int
        | Type::F16
        | Type::F32
        | Type::F64
        | Type::Simple
        | Type::Bytes
        | Type::String => d.skip().map_err(bad)?,
    }
    Ok(())
}

/// The length in bytes of the first data item of `bytes` (which may be followed by others).
pub(super) fn item_len(bytes: &[u8], depth: u8, what: &'static str) -> Result<usize, Fido2Error> {
    let mut d = Decoder::new(bytes);
    skip_item(&mut d, depth, what)?;
    Ok(d.position())
}

/// The entry count of a definite-length map, at most `max`.
pub(super) fn map_header(
    d: &mut Decoder<'_>,
    max: u64,
    what: &'static str,
) -> Result<u64, Fido2Error> {
    if d.datatype().map_err(|_| Fido2Error::Malformed(what))? != Type::Map {
        return Err(Fido2Error::Malformed(what));
    }
    let n = definite(d.map().map_err(|_| Fido2Error::Malformed(what))?, what)?;
    if n > max {
        return Err(Fido2Error::Malformed(what));
    }
    Ok(n)
}

fn definite(len: Option<u64>, what: &'static str) -> Result<u64, Fido2Error> {
    len.ok_or(Fido2Error::Malformed(what))
}

fn nested(depth: u8, what: &'static str) -> Result<u8, Fido2Error> {
    depth.checked_sub(1).ok_or(Fido2Error::Malformed(what))
}
