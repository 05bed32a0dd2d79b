//! The decode memory budget: bytes of decoded pixels that all requests may hold at once. A
//! request asks for its whole decode cost (estimated from the image header by
//! [`super::predict::inspect`], before any pixel is decoded) and holds it until its decode and
//! preprocessing end. A request costing more than the whole budget is refused at once (413);
//! others wait their turn for at most `decode_queue_timeout` (then 503 + `Retry-After`), so a
//! burst of large images queues instead of multiplying the server's memory.
//!
//! This module only counts bytes; what an image costs is decided in `predict`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;

/// Permits are KiB: a semaphore counts in `u32` per acquisition, and KiB reach 4 TiB.
const UNIT: u64 = 1024;

#[derive(Debug)]
pub struct DecodeBudget {
    permits: Arc<Semaphore>,
    total_bytes: u64,
    units: u32,
    wait: Duration,
}

/// Budget held by one request; released on drop.
#[derive(Debug)]
pub struct Reservation {
    _permit: Option<OwnedSemaphorePermit>,
}

impl DecodeBudget {
    pub fn new(total_bytes: u64, wait: Duration) -> Self {
        let units = u32::try_from(total_bytes / UNIT)
            .unwrap_or(u32::MAX)
            .min(Semaphore::MAX_PERMITS as u32)
            .max(1);
        DecodeBudget {
            permits: Arc::new(Semaphore::new(units as usize)),
            total_bytes,
            units,
            wait,
        }
    }

    /// Waits until `bytes` of the budget are free and holds them.
    pub async fn reserve(
        &self,
        bytes: u64,
        width: u32,
        height: u32,
    ) -> Result<Reservation, ApiError> {
        let needed = bytes.div_ceil(UNIT);
        if needed > u64::from(self.units) {
            return Err(ApiError::OverDecodeBudget {
                width,
                height,
                needed: bytes,
                budget: self.total_bytes,
            });
        }
        if needed == 0 {
            return Ok(Reservation { _permit: None });
        }
        let acquire = self.permits.clone().acquire_many_owned(needed as u32);
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(permit)) => Ok(Reservation {
                _permit: Some(permit),
            }),
            // The semaphore is never closed; treat it as shutting down if it ever is.
            Ok(Err(_)) => Err(ApiError::ShuttingDown),
            Err(_) => Err(ApiError::DecodeBusy {
                seconds: self.wait.as_secs(),
            }),
        }
    }

    /// Bytes reserved right now.
    pub fn in_use_bytes(&self) -> u64 {
        u64::from(self.units).saturating_sub(self.permits.available_permits() as u64) * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn over_budget_is_refused_and_the_rest_wait() {
        let budget = DecodeBudget::new(10 * UNIT, Duration::from_millis(50));
        assert!(matches!(
            budget.reserve(11 * UNIT, 1, 1).await,
            Err(ApiError::OverDecodeBudget { .. })
        ));
        let a = budget.reserve(6 * UNIT, 1, 1).await.unwrap();
        assert_eq!(budget.in_use_bytes(), 6 * UNIT);
        // 6 + 6 > 10: the second waits, then times out.
        assert!(matches!(
            budget.reserve(6 * UNIT, 1, 1).await,
            Err(ApiError::DecodeBusy { .. })
        ));
        drop(a);
        let _b = budget.reserve(6 * UNIT, 1, 1).await.unwrap();
        let _c = budget.reserve(4 * UNIT, 1, 1).await.unwrap();
        assert_eq!(budget.in_use_bytes(), 10 * UNIT);
    }
}
