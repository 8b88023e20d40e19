//! An in-memory backend for unit tests of the engine. Never a substitute for
//! testing a real backend.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{
    clip_range, Backend, BackendError, Capabilities, ErrorKind, Handle, Kind, ObjectMeta, PutMode,
    Result,
};

/// Objects in a map behind a mutex.
#[derive(Default)]
pub struct MemoryBackend {
    objects: Mutex<BTreeMap<Handle, Bytes>>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn not_found(handle: &Handle) -> BackendError {
        BackendError::new(ErrorKind::NotFound, format!("{handle} (memory)"))
    }

    /// Replace an object's bytes behind the engine's back, for corruption tests.
    pub fn tamper(&self, handle: &Handle, f: impl FnOnce(&mut Vec<u8>)) {
        let mut objects = self.objects.lock().unwrap();
        if let Some(data) = objects.get_mut(handle) {
            let mut v = data.to_vec();
            f(&mut v);
            *data = Bytes::from(v);
        }
    }
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemoryBackend")
    }
}

impl fmt::Display for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("memory")
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            local: true,
            ..Capabilities::default()
        }
    }

    async fn put(&self, handle: &Handle, data: Bytes, mode: PutMode) -> Result<()> {
        let mut objects = self.objects.lock().unwrap();
        if mode == PutMode::Create && objects.contains_key(handle) {
            return Err(BackendError::new(
                ErrorKind::AlreadyExists,
                format!("{handle} (memory)"),
            ));
        }
        objects.insert(handle.clone(), data);
        Ok(())
    }

    async fn get(&self, handle: &Handle, range: Option<Range<u64>>) -> Result<Bytes> {
        let objects = self.objects.lock().unwrap();
        let data = objects.get(handle).ok_or_else(|| Self::not_found(handle))?;
        match range {
            None => Ok(data.clone()),
            Some(r) => {
                let r = clip_range(handle, &r, data.len() as u64)?;
                Ok(data.slice(r.start as usize..r.end as usize))
            }
        }
    }

    async fn head(&self, handle: &Handle) -> Result<ObjectMeta> {
        let objects = self.objects.lock().unwrap();
        let data = objects.get(handle).ok_or_else(|| Self::not_found(handle))?;
        Ok(ObjectMeta::new(handle.clone(), data.len() as u64))
    }

    async fn list(&self, kind: Kind) -> Result<Vec<ObjectMeta>> {
        let objects = self.objects.lock().unwrap();
        Ok(objects
            .iter()
            .filter(|(h, _)| h.kind == kind)
            .map(|(h, d)| ObjectMeta::new(h.clone(), d.len() as u64))
            .collect())
    }

    async fn delete(&self, handle: &Handle) -> Result<()> {
        let mut objects = self.objects.lock().unwrap();
        objects
            .remove(handle)
            .map(|_| ())
            .ok_or_else(|| Self::not_found(handle))
    }
}
