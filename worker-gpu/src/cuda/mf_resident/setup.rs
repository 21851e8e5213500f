//! The engine's set-up (`MfResident::setup`): the ratings, block starts and user rows uploaded
//! once, the item cache sized.

use super::{encode, input, to_u32, CudaMfResident};
use crate::cuda::buffers::{DevBuf, KeyList, Pinned};
use crate::cuda::bus::Bus;
use crate::cuda::{Call, Gpu, GpuError};
use ps_apps::mf::{Factors, Rating, ResidentSetup, Split};

/// `values` as a table of `factors` stores them, in 16-bit words (an f32 is two, little-endian
/// as the device reads it; an f16 one, rounded to nearest even like the kernels' stores).
fn stored_words(factors: Factors, values: &[f32]) -> Vec<u16> {
    match factors {
        Factors::F32 => values
            .iter()
            .flat_map(|x| {
                let b = x.to_bits();
                [b as u16, (b >> 16) as u16]
            })
            .collect(),
        Factors::F16 => values
            .iter()
            .map(|&x| half::f16::from_f32(x).to_bits())
            .collect(),
    }
}

impl CudaMfResident {
    /// Copies `data` to `dst` through `staging` on the compute stream, counting the bytes.
    pub(super) fn upload<
        T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits + Copy + Default,
    >(
        gpu: &Gpu,
        bus: &mut Bus,
        staging: &mut Pinned<T>,
        dst: &mut DevBuf<T>,
        data: &[T],
    ) -> Result<(), GpuError> {
        staging.fill(data)?;
        bus.h2d(&gpu.compute, || {
            dst.upload(&gpu.compute, staging)?;
            Ok(std::mem::size_of_val(data) as u64)
        })
    }

    /// Uploads `which` ratings, each checked against the `nu x ni` tables.
    pub(super) fn upload_ratings(
        &mut self,
        which: Split,
        ratings: &[Rating],
        (nu, ni): (usize, usize),
    ) -> Result<(), GpuError> {
        if let Some(r) = ratings
            .iter()
            .find(|r| r.user as usize >= nu || r.item as usize >= ni)
        {
            return Err(input(format!(
                "rating of user {} and item {} outside the {nu} x {ni} tables",
                r.user, r.item
            )));
        }
        to_u32(ratings.len(), "ratings")?;
        let mut u32s = Pinned::new(&self.gpu.ctx)?;
        let mut f32s = Pinned::new(&self.gpu.ctx)?;
        let dst = match which {
            Split::Train => &mut self.train,
            Split::Test => &mut self.test,
        };
        let users: Vec<u32> = ratings.iter().map(|r| r.user).collect();
        Self::upload(&self.gpu, &mut self.bus, &mut u32s, &mut dst.user, &users)?;
        let items: Vec<u32> = ratings.iter().map(|r| r.item).collect();
        let mut u32b = Pinned::new(&self.gpu.ctx)?;
        Self::upload(&self.gpu, &mut self.bus, &mut u32b, &mut dst.item, &items)?;
        let values: Vec<f32> = ratings.iter().map(|r| r.value).collect();
        Self::upload(&self.gpu, &mut self.bus, &mut f32s, &mut dst.value, &values)?;
        dst.len = ratings.len();
        // The one-off staging buffers are freed here, after their copies finish.
        self.gpu.compute.synchronize().call("cuStreamSynchronize")?;
        self.bus.settle()
    }

    pub(super) fn try_setup(&mut self, s: &ResidentSetup<'_>) -> Result<(), GpuError> {
        let done = self.set_up_tables(s);
        if done.is_err() {
            // Ratings uploaded before the failure are not a set-up: the waves and the error
            // have nothing to run over.
            (self.train.len, self.test.len) = (0, 0);
        }
        done
    }

    pub(super) fn set_up_tables(&mut self, s: &ResidentSetup<'_>) -> Result<(), GpuError> {
        let w = s.layout.width();
        self.own = encode::OwnPushes::default();
        self.layout = s.layout;
        self.factors = s.factors;
        // Until this set-up succeeds no row is there: every key fails its check against no
        // rows (a typed error, not a read of a table never allocated), and no key list of an
        // earlier set-up is taken as already checked.
        (self.num_users, self.num_items) = (0, 0);
        (self.train.len, self.test.len) = (0, 0);
        let tables = (s.users.len() / w.max(1), s.num_items);
        self.reads = KeyList::default();
        self.gathers = KeyList::default();
        self.user_keys = KeyList::default();
        to_u32(w, "row width")?;
        to_u32(s.num_items.saturating_mul(w), "item cache")?;
        let bands = s.schedule.bands();
        if bands > self.lanes {
            return Err(input(format!(
                "a schedule of {bands} bands needs {bands} resident warps; this device holds {}",
                self.lanes
            )));
        }
        self.bands = to_u32(bands, "bands")?;
        self.upload_ratings(Split::Train, s.train, tables)?;
        self.upload_ratings(Split::Test, s.test, tables)?;
        let starts = s
            .schedule
            .starts()
            .iter()
            .map(|&x| to_u32(x, "block start"))
            .collect::<Result<Vec<u32>, _>>()?;
        let mut staging = Pinned::new(&self.gpu.ctx)?;
        Self::upload(
            &self.gpu,
            &mut self.bus,
            &mut staging,
            &mut self.starts,
            &starts,
        )?;
        let mut rows = Pinned::new(&self.gpu.ctx)?;
        Self::upload(
            &self.gpu,
            &mut self.bus,
            &mut rows,
            &mut self.users,
            &stored_words(s.factors, s.users),
        )?;
        let stream = &self.gpu.compute;
        self.items
            .zero(stream, s.num_items * w * s.factors.bytes() / 2)?;
        self.done.zero(stream, bands)?;
        self.stalled.zero(stream, 2)?;
        self.sse.zero(stream, 1)?;
        stream.synchronize().call("cuStreamSynchronize")?;
        self.bus.settle()?;
        (self.num_users, self.num_items) = tables;
        Ok(())
    }
}
