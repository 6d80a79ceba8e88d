//! Lowers a `batch` into a plugin's memory with one copy per list.
//!
//! Wasmtime's generic lowering writes a `list<event-view>` field by field, each store
//! looking up the guest's memory again; with about 80 fields per view that was most of the
//! host's cost per event. [`LoweredBatch`] lays the views out in the canonical ABI's
//! format here (a plain byte buffer per list) and copies each list into the guest at
//! once. It type-checks as the generated [`wit::Batch`], so the contract and the guest's
//! view of it are unchanged; the layout below follows the canonical ABI's rules for
//! records (fields at their alignment, size rounded up to the largest), `option`
//! (a `u8` case, then the payload at its alignment), `bool` and `enum` (a `u8`).

use std::mem::MaybeUninit;

use wasmtime::ValRaw;
use wasmtime::component::__internal::{
    CanonicalAbiInfo, InstanceType, InterfaceType, LowerContext,
};
use wasmtime::component::{ComponentType, Lower};

use super::wit;

/// Size of an `event-view` in the canonical ABI (checked against wasmtime's in a test).
const EVENT_VIEW_SIZE: usize = 424;
/// Alignment of an `event-view` (it holds `u64` and `s64` fields).
const EVENT_VIEW_ALIGN: u32 = 8;
/// Size and alignment of a `tuple<text-span, text-span>`.
const PAIR_SIZE: usize = 16;
const PAIR_ALIGN: u32 = 4;

/// A `batch` to hand to a plugin, lowered list by list (see the module's documentation).
pub(super) struct LoweredBatch<'a> {
    batch: &'a wit::Batch,
    /// The views and pairs in their canonical ABI layout, built before the call.
    views: &'a [u8],
    pairs: &'a [u8],
}

/// Buffers the canonical ABI images are built in, reused from one batch to the next.
#[derive(Default)]
pub(super) struct Images {
    views: Vec<u8>,
    pairs: Vec<u8>,
}

impl Images {
    /// Lays out `batch`'s views and pairs; the result borrows both.
    pub(super) fn lower<'a>(&'a mut self, batch: &'a wit::Batch) -> LoweredBatch<'a> {
        self.views.clear();
        self.views.resize(batch.events.len() * EVENT_VIEW_SIZE, 0);
        for (view, out) in batch
            .events
            .iter()
            .zip(self.views.chunks_exact_mut(EVENT_VIEW_SIZE))
        {
            write_view(&mut Writer(out), view);
        }
        self.pairs.clear();
        self.pairs.resize(batch.pairs.len() * PAIR_SIZE, 0);
        for ((k, v), out) in batch
            .pairs
            .iter()
            .zip(self.pairs.chunks_exact_mut(PAIR_SIZE))
        {
            let mut w = Writer(out);
            w.span(0, *k);
            w.span(8, *v);
        }
        LoweredBatch {
            batch,
            views: &self.views,
            pairs: &self.pairs,
        }
    }
}

/// Writes little-endian values at offsets of one element's bytes (zeroed beforehand, so
/// padding and the payloads of absent options are zeros).
struct Writer<'a>(&'a mut [u8]);

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

    /// `text-span` and `pair-range`: two `u32`s (8 bytes, aligned to 4).
    fn span(&mut self, at: usize, s: wit::TextSpan) {
        self.u32(at, s.start);
        self.u32(at + 4, s.len);
    }

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
    fn option<T: Copy>(
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

    /// `object-view`: seven spans (56 bytes, aligned to 4).
    fn object(&mut self, at: usize, o: &wit::ObjectView) {
        let spans = [
            o.kind,
            o.namespace,
            o.name,
            o.uid,
            o.api_version,
            o.resource_version,
            o.field_path,
        ];
        for (i, s) in spans.into_iter().enumerate() {
            self.span(at + 8 * i, s);
        }
    }
}

/// One `event-view`, field by field in the WIT's order, at the offsets the canonical ABI
/// gives them.
fn write_view(w: &mut Writer<'_>, v: &wit::EventView) {
    let spans = [
        v.uid,
        v.name,
        v.namespace,
        v.resource_version,
        v.api_version,
        v.event_type,
        v.reason,
        v.message,
    ];
    for (i, s) in spans.into_iter().enumerate() {
        w.span(8 * i, s);
    }
    w.u8(64, u8::from(v.combined));
    w.span(68, v.action);
    w.object(76, &v.object);
    w.option(132, 4, v.related.as_ref(), |w, at, o| w.object(at, o));
    w.span(192, v.reporting_controller);
    w.span(200, v.reporting_instance);
    w.span(208, v.host);
    w.u64(216, v.count);
    w.option(224, 8, v.first_timestamp, Writer::datetime);
    w.option(248, 8, v.last_timestamp, Writer::datetime);
    w.option(272, 8, v.event_time, Writer::datetime);
    w.option(296, 8, v.series, |w, at, s| {
        w.u64(at, s.count);
        w.option(at + 8, 8, s.last_observed, Writer::datetime);
    });
    w.option(336, 8, v.timestamp, Writer::datetime);
    w.option(360, 1, v.severity, |w, at, s| w.u8(at, s as u8));
    w.option(362, 1, v.category, |w, at, c| w.u8(at, c as u8));
    w.option(364, 4, v.correlation_id, Writer::span);
    w.range(376, v.labels);
    w.option(384, 4, v.enrichment, |w, at, en| {
        w.range(at, en.owners);
        w.span(at + 8, en.node);
        w.range(at + 16, en.labels);
    });
    w.option(412, 4, v.extra, Writer::span);
}

impl LoweredBatch<'_> {
    /// Copies the three lists into guest memory; returns each one's (pointer, length).
    fn store_lists<T>(&self, cx: &mut LowerContext<'_, T>) -> wasmtime::Result<[(u32, u32); 3]> {
        Ok([
            copy_list(cx, &self.batch.text, 1, self.batch.text.len())?,
            copy_list(cx, self.pairs, PAIR_ALIGN, self.batch.pairs.len())?,
            copy_list(cx, self.views, EVENT_VIEW_ALIGN, self.batch.events.len())?,
        ])
    }
}

/// Allocates `bytes.len()` bytes in the guest (its `cabi_realloc`) and copies `bytes` there.
fn copy_list<T>(
    cx: &mut LowerContext<'_, T>,
    bytes: &[u8],
    align: u32,
    items: usize,
) -> wasmtime::Result<(u32, u32)> {
    let ptr = cx.realloc(0, 0, align, bytes.len())?;
    cx.as_slice_mut()
        .get_mut(ptr..)
        .and_then(|m| m.get_mut(..bytes.len()))
        .ok_or_else(|| wasmtime::format_err!("realloc returned memory out of bounds"))?
        .copy_from_slice(bytes);
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
