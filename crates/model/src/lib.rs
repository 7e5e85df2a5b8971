//! The XenAPI networking model: classes as a schema, XAPI's error codes, and
//! every operation as a function over one store transaction, with XAPI's
//! checks in XAPI's order. No I/O.

pub mod bond;
pub mod calls;
pub mod db;
pub mod error;
pub mod generic;
pub mod helpers;
pub mod host;
pub mod hotplug;
pub mod install;
pub mod join;
pub mod network;
pub mod pif;
pub mod pool;
pub mod query;
pub mod report;
pub mod schema;
pub mod sriov;
pub mod tunnel;
pub mod vif;
pub mod vlan;
pub mod vm;

pub use db::{Db, MemTables, Read, Reader, Record, Tables, TablesMut};
pub use error::{ApiError, ApiResult};

pub const NULL_REF: &str = "OpaqueRef:NULL";

/// Now in XAPI's datetime text, `YYYYMMDDTHH:MM:SSZ` (UTC).
pub fn now_datetime() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    datetime_of_unix(secs)
}

/// Civil date from days since the epoch (Howard Hinnant's algorithm).
pub fn datetime_of_unix(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn datetime() {
        assert_eq!(super::datetime_of_unix(0), "19700101T00:00:00Z");
        assert_eq!(super::datetime_of_unix(1_767_225_600), "20260101T00:00:00Z");
    }
}
