//! What tensors' elements live in: host memory, a copy on a device (a GPU buffer), or both; or
//! memory a caller lends for the length of a run (the C ABI's borrowed tensors), read in place.
//!
//! A tensor made on the host has its elements there from the start. A device backend may attach
//! a copy it uploaded ([`Storage::attach_device`]), so that later nodes on that device (and later
//! runs, for weights) reuse it instead of uploading again. A tensor a device kernel made lives
//! only on the device ([`Storage::on_device`]) until something on the host reads it: the first
//! host read downloads it once. Which device type a buffer is, only its backend knows: it
//! downcasts [`DeviceBuffer::as_any`] to its own type.

use super::dtype::DType;
use super::tensor::{Elem, TensorData};
use super::words::Word;
use crate::Result;
use std::any::Any;
use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};

/// A tensor's elements in a device's memory, owned by the backend that made it.
pub trait DeviceBuffer: Send + Sync + std::fmt::Debug {
    /// Which device holds it (for messages and checks), e.g. `opencl:0`.
    fn device(&self) -> &str;
    /// Copies the elements to the host.
    fn download(&self) -> Result<TensorData>;
    /// For the backend that made it: downcast to its own buffer type.
    fn as_any(&self) -> &dyn Any;
}

/// Typed elements, on the host and/or on a device. `len` elements of `dtype` in both places.
#[derive(Debug)]
pub struct Storage {
    dtype: DType,
    len: usize,
    /// Filled from the start for host tensors; on first host read for device-made ones, and on
    /// the first read that needs owned elements (a write, `into_data`) for borrowed ones.
    host: OnceLock<TensorData>,
    /// Caller memory that reads go to in place.
    borrowed: Option<Lent>,
    device: OnceLock<Arc<dyn DeviceBuffer>>,
}

/// `bytes` bytes of caller memory at `ptr`, which the caller keeps alive and unchanged while any
/// tensor over it is in use (see [`Storage::borrowed`]); shared between threads only for reads.
#[derive(Debug)]
struct Lent {
    ptr: NonNull<u8>,
    bytes: usize,
}

// SAFETY: the memory is only read, and the lender keeps it alive and unchanged (Storage::borrowed).
unsafe impl Send for Lent {}
unsafe impl Sync for Lent {}

impl Lent {
    fn bytes(&self) -> &[u8] {
        // SAFETY: the lender guarantees `bytes` readable bytes at `ptr` (Storage::borrowed).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.bytes) }
    }
}

impl Storage {
    pub fn host(data: TensorData) -> Storage {
        let (dtype, len) = (data.dtype(), data.len());
        Storage { dtype, len, host: OnceLock::from(data), borrowed: None, device: OnceLock::new() }
    }

    /// Elements that exist only on a device so far.
    pub fn on_device(dtype: DType, len: usize, buffer: Arc<dyn DeviceBuffer>) -> Storage {
        Storage { dtype, len, host: OnceLock::new(), borrowed: None, device: OnceLock::from(buffer) }
    }

    /// `len` elements of `dtype` in caller memory at `ptr`, read in place. Only plain number
    /// types (any bit pattern valid) can be lent; others are refused.
    ///
    /// # Safety
    /// `ptr` points to `len * dtype.size()` readable bytes, aligned for `dtype`, that stay alive
    /// and unchanged while this storage (or any tensor over it) exists. A session copies its
    /// outputs out of lent memory before returning them ([`Storage::is_borrowed`]).
    pub unsafe fn borrowed(dtype: DType, len: usize, ptr: NonNull<u8>) -> Result<Storage> {
        if !dtype.is_plain_number() {
            crate::bail!(Unsupported, "{dtype} elements cannot be lent in place");
        }
        let bytes = len
            .checked_mul(dtype.size())
            .ok_or_else(|| crate::err!(ResourceLimit, "{len} {dtype} elements overflow"))?;
        let lent = Lent { ptr, bytes };
        Ok(Storage { dtype, len, host: OnceLock::new(), borrowed: Some(lent), device: OnceLock::new() })
    }

    /// The elements as words of their width ([`Word`]), in place like [`Storage::slice`].
    pub fn words<W: Word>(&self) -> Result<Option<&[W]>> {
        match (&self.borrowed, self.host.get()) {
            // Lent elements are plain numbers: words of their width read them, no other type does.
            (Some(lent), None) => {
                let fits = W::DTYPE != DType::String && W::DTYPE.size() == self.dtype.size();
                Ok(if fits { W::from_plain_bytes(lent.bytes()) } else { None })
            }
            _ => Ok(W::view(self.data()?)),
        }
    }

    /// Whether the elements are caller memory read in place.
    pub fn is_borrowed(&self) -> bool {
        self.borrowed.is_some()
    }

    /// The elements as `&[T]` (`None` when `T` is not their type), in place for every form of
    /// storage but a device-only one, which downloads first.
    pub fn slice<T: Elem>(&self) -> Result<Option<&[T]>> {
        match (&self.borrowed, self.host.get()) {
            (Some(lent), None) => Ok(if T::DTYPE == self.dtype { T::from_plain_bytes(lent.bytes()) } else { None }),
            _ => Ok(T::slice(self.data()?)),
        }
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The host elements, downloaded first if they are only on a device. Two threads reading at
    /// once may both download; one result is kept.
    pub fn data(&self) -> Result<&TensorData> {
        if let Some(d) = self.host.get() {
            return Ok(d);
        }
        if let Some(lent) = &self.borrowed {
            let copy = TensorData::from_plain_bytes(self.dtype, lent.bytes())?;
            return Ok(self.host.get_or_init(|| copy));
        }
        let Some(buffer) = self.device.get() else {
            crate::bail!(Runtime, "a tensor's elements are neither on the host nor on a device");
        };
        let data = buffer.download()?;
        if data.dtype() != self.dtype || data.len() != self.len {
            crate::bail!(
                Runtime,
                "{} gave back {} {} elements for a tensor of {} {}",
                buffer.device(),
                data.len(),
                data.dtype(),
                self.len,
                self.dtype
            );
        }
        log::debug!("downloaded {} {} elements from {}", self.len, self.dtype, buffer.device());
        Ok(self.host.get_or_init(|| data))
    }

    /// Whether the host has the elements now (without downloading).
    pub fn is_on_host(&self) -> bool {
        self.host.get().is_some()
    }

    /// The device copy, if there is one.
    pub fn device_buffer(&self) -> Option<&Arc<dyn DeviceBuffer>> {
        self.device.get()
    }

    /// Remembers a device copy of these elements (uploaded by a backend); the first one attached
    /// stays. Returns the copy kept.
    pub fn attach_device(&self, buffer: Arc<dyn DeviceBuffer>) -> &Arc<dyn DeviceBuffer> {
        self.device.get_or_init(|| buffer)
    }

    /// The host elements, mutable, for a sole owner: downloaded first if needed; the device copy
    /// is dropped, since it would no longer match.
    pub fn data_mut(&mut self) -> Result<&mut TensorData> {
        self.data()?;
        self.device = OnceLock::new();
        self.borrowed = None;
        Ok(self.host.get_mut().expect("downloaded above"))
    }

    /// The host elements, owned.
    pub fn into_data(self) -> Result<TensorData> {
        self.data()?;
        Ok(self.host.into_inner().expect("downloaded above"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug)]
    struct FakeDevice {
        data: TensorData,
        downloads: AtomicUsize,
    }

    impl DeviceBuffer for FakeDevice {
        fn device(&self) -> &str {
            "fake:0"
        }
        fn download(&self) -> Result<TensorData> {
            self.downloads.fetch_add(1, Ordering::Relaxed);
            Ok(self.data.clone())
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
    }

    #[test]
    fn device_storage_downloads_once_and_writes_drop_the_device_copy() {
        let fake = Arc::new(FakeDevice { data: TensorData::F32(vec![1.0, 2.0]), downloads: AtomicUsize::new(0) });
        let mut s = Storage::on_device(DType::F32, 2, fake.clone());
        assert!(!s.is_on_host());
        assert_eq!(s.data().unwrap(), &TensorData::F32(vec![1.0, 2.0]));
        assert_eq!(s.data().unwrap().len(), 2);
        assert_eq!(fake.downloads.load(Ordering::Relaxed), 1);
        assert!(s.device_buffer().unwrap().as_any().downcast_ref::<FakeDevice>().is_some());
        s.data_mut().unwrap();
        assert!(s.device_buffer().is_none());
    }

    #[test]
    fn tensors_on_a_device_read_on_the_host_and_copy_on_write() {
        use crate::ir::Tensor;
        let data = TensorData::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let fake = Arc::new(FakeDevice { data, downloads: AtomicUsize::new(0) });
        let t = Tensor::on_device(DType::F32, vec![2, 3], fake.clone()).unwrap();
        assert!(format!("{t:?}").contains("fake:0"), "formatting does not download");
        assert_eq!(fake.downloads.load(Ordering::Relaxed), 0);
        let row = t.view(vec![3], 3).unwrap();
        assert_eq!(row.as_slice::<f32>().unwrap(), &[4.0, 5.0, 6.0]);
        assert_eq!(t.as_slice::<f32>().unwrap()[0], 1.0);
        assert_eq!(fake.downloads.load(Ordering::Relaxed), 1, "one download serves every view");
        let mut w = t.clone();
        w.as_mut_slice::<f32>().unwrap()[0] = 9.0;
        assert!(w.storage().device_buffer().is_none(), "a written copy has no device copy");
        assert!(t.storage().device_buffer().is_some());
        assert_eq!(t.into_vec::<f32>().unwrap()[0], 1.0);
        assert!(Tensor::on_device(DType::F32, vec![1 << 40, 1 << 40], fake).is_err());
    }

    /// Lent memory is read in place as typed elements and as words alike (the data-movement
    /// kernels read words).
    #[test]
    fn lent_memory_is_read_in_place_as_elements_and_as_words() {
        use crate::ir::Tensor;
        let buffer = [1.5f32, -2.0, 3.25];
        let ptr = NonNull::new(buffer.as_ptr().cast_mut().cast::<u8>()).unwrap();
        // SAFETY: `buffer` outlives `t` and does not change while `t` exists.
        let t = unsafe { Tensor::borrowed(DType::F32, vec![3], ptr).unwrap() };
        assert_eq!(t.as_slice::<f32>().unwrap().as_ptr(), buffer.as_ptr());
        let words = t.as_words::<u32>().unwrap();
        assert_eq!(words.as_ptr().cast::<f32>(), buffer.as_ptr());
        assert_eq!(words[0], 1.5f32.to_bits());
        assert!(t.as_words::<u64>().is_err());
        assert!(!t.storage().is_on_host(), "nothing was copied");
    }

    #[test]
    fn a_device_that_returns_the_wrong_size_is_an_error() {
        let fake = Arc::new(FakeDevice { data: TensorData::F32(vec![1.0]), downloads: AtomicUsize::new(0) });
        let s = Storage::on_device(DType::F32, 2, fake);
        let e = s.data().unwrap_err();
        assert!(e.message.contains("fake:0 gave back 1 float32 elements"), "{e}");
    }

    #[test]
    fn the_first_attached_copy_stays() {
        let s = Storage::host(TensorData::I64(vec![3]));
        let a = Arc::new(FakeDevice { data: TensorData::I64(vec![3]), downloads: AtomicUsize::new(0) });
        let b = Arc::new(FakeDevice { data: TensorData::I64(vec![3]), downloads: AtomicUsize::new(0) });
        let kept = s.attach_device(a.clone()).clone();
        s.attach_device(b);
        assert!(Arc::ptr_eq(&kept, s.device_buffer().unwrap()));
        assert_eq!(s.data().unwrap(), &TensorData::I64(vec![3]));
        assert_eq!(a.downloads.load(Ordering::Relaxed), 0);
    }
}
