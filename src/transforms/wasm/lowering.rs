//! Lowers a `batch` into a plugin's memory with one allocation per list, and lifts its
//! dispositions without moving the large `disposition` value once per event.
//!
//! Wasmtime's generic lowering writes a `list<event-view>` field by field, each store
//! looking up the guest's memory again; with about 80 fields per view that was most of the
//! host's cost per event. [`LoweredBatch`] writes kollate's events straight into the
//! canonical ABI's format in the guest's memory (no intermediate records, no second copy
//! of the views) and copies the text and pairs gathered on the way in one piece each. It
//! type-checks as the generated [`wit::Batch`], so the contract and the guest's view of it
//! are unchanged; the layout below follows the canonical ABI's rules for records (fields
//! at their alignment, size rounded up to the largest), `option` (a `u8` case, then the
//! payload at its alignment), `bool` and `enum` (a `u8`).

use std::mem::MaybeUninit;
use std::sync::Mutex;

use wasmtime::ValRaw;
use wasmtime::component::__internal::{
    CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext, LowerContext,
};
use wasmtime::component::{ComponentType, Lift, Lower};

use super::{extra_json, to_category, to_datetime, to_severity, wit};
use crate::event::{Event, ObjectRef, Timestamp};

/// Size of an `event-view` in the canonical ABI (checked against wasmtime's in a test).
const EVENT_VIEW_SIZE: usize = 424;
/// Alignment of an `event-view` (it holds `u64` and `s64` fields).
const EVENT_VIEW_ALIGN: u32 = 8;
/// Size and alignment of a `tuple<text-span, text-span>`.
const PAIR_SIZE: usize = 16;
const PAIR_ALIGN: u32 = 4;

/// A `batch` to hand to a plugin: the events, laid out when wasmtime lowers the call's
/// arguments (each `event-view` written straight into the guest's memory, the text and the
/// pairs gathered on the way and copied after).
pub(super) struct LoweredBatch<'a> {
    events: &'a [Event],
    /// Behind a lock because lowering gets `&self` (and wasmtime asks for `Sync`); never
    /// contended.
    images: Mutex<&'a mut Images>,
}

/// Buffers a batch's text and pairs are gathered in, reused from one batch to the next.
#[derive(Default)]
pub(super) struct Images {
    text: Vec<u8>,
    pairs: Vec<u8>,
}

impl Images {
    /// The batch of `events` to lower with these buffers.
    pub(super) fn lower<'a>(&'a mut self, events: &'a [Event]) -> LoweredBatch<'a> {
        LoweredBatch {
            events,
            images: Mutex::new(self),
        }
    }
}

/// Where an event's strings and label pairs go while its view is written.
struct Layout<'a> {
    text: &'a mut Vec<u8>,
    pairs: &'a mut Vec<u8>,
    /// The last timestamp converted: an event's timestamps are often equal.
    last_time: Option<(Timestamp, wit::Datetime)>,
}

impl Layout<'_> {
    /// `t` as a `datetime` (seconds and nanoseconds since the epoch).
    fn time(&mut self, t: Option<Timestamp>) -> Option<wit::Datetime> {
        let t = t?;
        match self.last_time {
            Some((last, converted)) if last == t => Some(converted),
            _ => {
                let converted = to_datetime(t);
                self.last_time = Some((t, converted));
                Some(converted)
            }
        }
    }

    /// Copies `s` into the text. Offsets past 4 GiB would wrap: [`LoweredBatch`] refuses
    /// such a batch before the plugin sees it.
    fn text(&mut self, s: &str) -> wit::TextSpan {
        if s.is_empty() {
            return wit::TextSpan { start: 0, len: 0 };
        }
        let start = self.text.len() as u32;
        self.text.extend_from_slice(s.as_bytes());
        wit::TextSpan {
            start,
            len: s.len() as u32,
        }
    }

    /// Appends `pairs` as `tuple<text-span, text-span>`s.
    fn pairs<'s>(&mut self, pairs: impl Iterator<Item = (&'s str, &'s str)>) -> wit::PairRange {
        let start = (self.pairs.len() / PAIR_SIZE) as u32;
        for (k, v) in pairs {
            let (k, v) = (self.text(k), self.text(v));
            let mut pair = [0; PAIR_SIZE];
            for (i, word) in [k.start, k.len, v.start, v.len].into_iter().enumerate() {
                pair[4 * i..4 * i + 4].copy_from_slice(&word.to_le_bytes());
            }
            self.pairs.extend_from_slice(&pair);
        }
        wit::PairRange {
            start,
            len: (self.pairs.len() / PAIR_SIZE) as u32 - start,
        }
    }

    /// `object-view`: seven spans (56 bytes, aligned to 4).
    fn object(&mut self, w: &mut Writer<'_>, at: usize, o: &ObjectRef) {
        let fields = [
            o.kind.as_str(),
            &o.namespace,
            &o.name,
            &o.uid,
            &o.api_version,
            &o.resource_version,
            &o.field_path,
        ];
        for (i, s) in fields.into_iter().enumerate() {
            w.span(at + 8 * i, self.text(s));
        }
    }

    /// One `event-view`, field by field in the WIT's order, at the offsets the canonical
    /// ABI gives them.
    fn event(&mut self, w: &mut Writer<'_>, e: &Event) {
        let fields = [
            e.uid.as_str(),
            &e.name,
            &e.namespace,
            &e.resource_version,
            &e.api_version,
            &e.event_type,
            &e.reason,
            &e.message,
        ];
        for (i, s) in fields.into_iter().enumerate() {
            w.span(8 * i, self.text(s));
        }
        w.u8(64, u8::from(e.combined));
        w.span(68, self.text(&e.action));
        self.object(w, 76, &e.object);
        w.option(132, 4, e.related.as_deref(), |w, at, r| {
            self.object(w, at, r)
        });
        w.span(192, self.text(&e.reporting_controller));
        w.span(200, self.text(&e.reporting_instance));
        w.span(208, self.text(&e.host));
        w.u64(216, e.count);
        w.option(224, 8, self.time(e.first_timestamp), Writer::datetime);
        w.option(248, 8, self.time(e.last_timestamp), Writer::datetime);
        w.option(272, 8, self.time(e.event_time), Writer::datetime);
        w.option(296, 8, e.series.as_ref(), |w, at, s| {
            w.u64(at, s.count);
            w.option(at + 8, 8, self.time(s.last_observed), Writer::datetime);
        });
        w.option(336, 8, self.time(e.timestamp), Writer::datetime);
        w.option(360, 1, e.severity, |w, at, s| {
            w.u8(at, to_severity(s) as u8)
        });
        w.option(362, 1, e.category, |w, at, c| {
            w.u8(at, to_category(c) as u8)
        });
        let correlation_id = e.correlation_id.as_deref().map(|id| self.text(id));
        w.option(364, 4, correlation_id, Writer::span);
        let labels = self.pairs(e.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        w.range(376, labels);
        w.option(384, 4, e.enrichment.as_deref(), |w, at, en| {
            let owners = self.pairs(en.owners.iter().map(|o| (o.kind.as_str(), o.name.as_str())));
            w.range(at, owners);
            w.span(at + 8, self.text(&en.node));
            let labels = self.pairs(en.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            w.range(at + 16, labels);
        });
        let extra = extra_json(e).map(|json| self.text(&json));
        w.option(412, 4, extra, Writer::span);
    }
}

/// Writes little-endian values at offsets of one element's bytes (zeroed beforehand, so
/// padding and the payloads of absent options are zeros).
struct Writer<'a>(&'a mut [u8; EVENT_VIEW_SIZE]);

impl Writer<'_> {
    fn bytes<const N: usize>(&mut self, at: usize, bytes: [u8; N]) {
        self.0[at..at + N].copy_from_slice(&bytes);
    }

    fn u8(&mut self, at: usize, v: u8) {
        self.0[at] = v;
    }

    fn u32(&mut self, at: usize, v: u32) {
        self.bytes(at, v.to_le_bytes());
    }

    fn u64(&mut self, at: usize, v: u64) {
        self.bytes(at, v.to_le_bytes());
    }

    /// `text-span`: two `u32`s (8 bytes, aligned to 4).
    fn span(&mut self, at: usize, s: wit::TextSpan) {
        self.u32(at, s.start);
        self.u32(at + 4, s.len);
    }

    /// `pair-range`: two `u32`s likewise.
    fn range(&mut self, at: usize, r: wit::PairRange) {
        self.u32(at, r.start);
        self.u32(at + 4, r.len);
    }

    /// `datetime`: `s64` seconds, `u32` nanoseconds (16 bytes, aligned to 8).
    fn datetime(&mut self, at: usize, t: wit::Datetime) {
        self.bytes(at, t.seconds.to_le_bytes());
        self.u32(at + 8, t.nanoseconds);
    }

    /// `option<T>`: the case byte, then the payload at `payload` bytes further on.
    fn option<T>(
        &mut self,
        at: usize,
        payload: usize,
        v: Option<T>,
        write: impl FnOnce(&mut Self, usize, T),
    ) {
        if let Some(v) = v {
            self.u8(at, 1);
            write(self, at + payload, v);
        }
    }
}

impl LoweredBatch<'_> {
    /// Writes the three lists into guest memory (each allocated with the guest's
    /// `cabi_realloc`); returns each one's (pointer, length).
    fn store_lists<T>(&self, cx: &mut LowerContext<'_, T>) -> wasmtime::Result<[(u32, u32); 3]> {
        let mut images = self
            .images
            .lock()
            .map_err(|_| wasmtime::format_err!("a lowering panicked"))?;
        let Images { text, pairs } = &mut **images;
        text.clear();
        pairs.clear();
        let size = self.events.len() * EVENT_VIEW_SIZE;
        let views = cx.realloc(0, 0, EVENT_VIEW_ALIGN, size)?;
        let memory = guest_slice(cx, views, size)?;
        // Padding and the payloads of absent options are zeros.
        memory.fill(0);
        let mut layout = Layout {
            text,
            pairs,
            last_time: None,
        };
        let (views_memory, _) = memory.as_chunks_mut::<EVENT_VIEW_SIZE>();
        for (event, view) in self.events.iter().zip(views_memory) {
            layout.event(&mut Writer(view), event);
        }
        if text.len() > u32::MAX as usize {
            wasmtime::bail!("the batch's text is over 4 GiB");
        }
        Ok([
            copy_list(cx, text, 1, text.len())?,
            copy_list(cx, pairs, PAIR_ALIGN, pairs.len() / PAIR_SIZE)?,
            (u32::try_from(views)?, u32::try_from(self.events.len())?),
        ])
    }
}

/// `len` bytes of guest memory from `ptr`, bounds-checked.
fn guest_slice<'m, T>(
    cx: &'m mut LowerContext<'_, T>,
    ptr: usize,
    len: usize,
) -> wasmtime::Result<&'m mut [u8]> {
    cx.as_slice_mut()
        .get_mut(ptr..)
        .and_then(|m| m.get_mut(..len))
        .ok_or_else(|| wasmtime::format_err!("realloc returned memory out of bounds"))
}

/// Allocates `bytes.len()` bytes in the guest (its `cabi_realloc`) and copies `bytes` there.
fn copy_list<T>(
    cx: &mut LowerContext<'_, T>,
    bytes: &[u8],
    align: u32,
    items: usize,
) -> wasmtime::Result<(u32, u32)> {
    let ptr = cx.realloc(0, 0, align, bytes.len())?;
    guest_slice(cx, ptr, bytes.len())?.copy_from_slice(bytes);
    Ok((u32::try_from(ptr)?, u32::try_from(items)?))
}

// SAFETY: the type information is `wit::Batch`'s (same WIT type, checked by its
// `typecheck`); the flat form is three (pointer, length) pairs, six `ValRaw`s in field
// order, as for any record of three lists.
unsafe impl ComponentType for LoweredBatch<'_> {
    type Lower = [ValRaw; 6];

    const ABI: CanonicalAbiInfo = <wit::Batch as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <wit::Batch as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: writes only memory returned by the guest's realloc for exactly these sizes
// (bounds-checked), and the flat form in full.
unsafe impl Lower for LoweredBatch<'_> {
    fn linear_lower_to_flat<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        _ty: InterfaceType,
        dst: &mut MaybeUninit<[ValRaw; 6]>,
    ) -> wasmtime::Result<()> {
        let [t, p, e] = self.store_lists(cx)?;
        dst.write([t.0, t.1, p.0, p.1, e.0, e.1].map(|v| ValRaw::i64(i64::from(v))));
        Ok(())
    }

    fn linear_lower_to_memory<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        _ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        let lists = self.store_lists(cx)?;
        for (i, (ptr, len)) in lists.into_iter().enumerate() {
            *cx.get::<4>(offset + 8 * i) = ptr.to_le_bytes();
            *cx.get::<4>(offset + 8 * i + 4) = len.to_le_bytes();
        }
        Ok(())
    }
}

/// What a plugin decided for one event, in a host-sized form: the payloads the generated
/// `disposition` holds inline (a whole `event` for `replace`) are boxed or moved out, so
/// a batch of answers is a few words per event.
pub(super) enum Verdict {
    /// `pass`.
    Pass,
    /// `drop`.
    Drop,
    /// `replace`.
    Replace(Box<wit::Event>),
    /// `fan-out`.
    FanOut(Vec<wit::Event>),
    /// `reject`.
    Reject(String),
    /// `set-labels`.
    SetLabels(Vec<(String, String)>),
}

impl From<wit::Disposition> for Verdict {
    fn from(d: wit::Disposition) -> Self {
        match d {
            wit::Disposition::Pass => Verdict::Pass,
            wit::Disposition::Drop => Verdict::Drop,
            wit::Disposition::Replace(e) => Verdict::Replace(Box::new(e)),
            wit::Disposition::FanOut(list) => Verdict::FanOut(list),
            wit::Disposition::Reject(reason) => Verdict::Reject(reason),
            wit::Disposition::SetLabels(labels) => Verdict::SetLabels(labels),
        }
    }
}

/// The `list<disposition>` a plugin returns, lifted as [`Verdict`]s: `pass` and `drop`
/// are read from their case byte alone; the other cases go through wasmtime's generated
/// lifting, one element at a time.
pub(super) struct Verdicts(pub(super) Vec<Verdict>);

/// The case bytes of `pass` and `drop` (the first two cases of `disposition`).
const PASS_CASE: u8 = 0;
const DROP_CASE: u8 = 1;

impl Verdicts {
    fn lift(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        ptr: u32,
        len: u32,
    ) -> wasmtime::Result<Self> {
        let InterfaceType::List(list) = ty else {
            wasmtime::bail!("expected a list of dispositions");
        };
        let element = cx.types[list].element;
        let size = <wit::Disposition as ComponentType>::SIZE32;
        let align = <wit::Disposition as ComponentType>::ALIGN32;
        let (ptr, len) = (usize::try_from(ptr)?, usize::try_from(len)?);
        let memory = cx.memory();
        let bytes = len
            .checked_mul(size)
            .and_then(|n| memory.get(ptr..)?.get(..n))
            .ok_or_else(|| wasmtime::format_err!("list pointer/length out of bounds of memory"))?;
        if ptr % usize::try_from(align)? != 0 {
            wasmtime::bail!("list pointer is not aligned");
        }
        let mut verdicts = Vec::with_capacity(len);
        for item in bytes.chunks_exact(size) {
            verdicts.push(match item[0] {
                PASS_CASE => Verdict::Pass,
                DROP_CASE => Verdict::Drop,
                _ => wit::Disposition::linear_lift_from_memory(cx, element, item)?.into(),
            });
        }
        Ok(Verdicts(verdicts))
    }
}

// SAFETY: the type information is `Vec<wit::Disposition>`'s (checked by its `typecheck`);
// a list's flat form is its (pointer, length).
unsafe impl ComponentType for Verdicts {
    type Lower = [ValRaw; 2];

    const ABI: CanonicalAbiInfo = <Vec<wit::Disposition> as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <Vec<wit::Disposition> as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: reads only guest memory, bounds-checked, in the list's canonical ABI layout.
unsafe impl Lift for Verdicts {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &[ValRaw; 2],
    ) -> wasmtime::Result<Self> {
        Self::lift(cx, ty, src[0].get_u32(), src[1].get_u32())
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        let word = |at: usize| {
            bytes
                .get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let (Some(ptr), Some(len)) = (word(0), word(4)) else {
            wasmtime::bail!("a list is 8 bytes");
        };
        Self::lift(cx, ty, ptr, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_the_canonical_abi_one() {
        assert_eq!(
            <wit::EventView as ComponentType>::SIZE32,
            EVENT_VIEW_SIZE,
            "event-view size"
        );
        assert_eq!(<wit::EventView as ComponentType>::ALIGN32, EVENT_VIEW_ALIGN);
        type Pair = (wit::TextSpan, wit::TextSpan);
        assert_eq!(<Pair as ComponentType>::SIZE32, PAIR_SIZE);
        assert_eq!(<Pair as ComponentType>::ALIGN32, PAIR_ALIGN);
        assert_eq!(<wit::Batch as ComponentType>::SIZE32, 24);
    }
}
