//! The protobuf messages memtrace pushes memory profiles with.
//!
//! memtrace writes these schemas itself (in `proto/`), keeping exactly the
//! package names, message names and field numbers the servers decode:
//!
//! * Pyroscope's push API, [`push::v1::PushRequest`], sent to
//!   `POST /push.v1.PusherService/Push` (connect protocol, binary protobuf),
//!   with its labels as [`types::v1::LabelPair`];
//! * Parca's profile store, [`parca::profilestore::v1alpha1::WriteRawRequest`],
//!   sent as protobuf JSON to `POST /api/profiles/writeraw`.
//!
//! Both carry the profile itself as gzipped pprof bytes. [`DESCRIPTOR_SET`]
//! is the compiled schema, for code that must read these messages by
//! reflection (protobuf JSON, as Parca's HTTP gateway does).

/// Pyroscope's `push.v1` package.
pub mod push {
    /// Version 1 of the push API.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/push.v1.rs"));
    }
}

/// Pyroscope's `types.v1` package: the label type of the push API.
pub mod types {
    /// Version 1 of the shared types.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/types.v1.rs"));
    }
}

/// Parca's packages.
pub mod parca {
    /// Parca's profile store.
    pub mod profilestore {
        /// The `parca.profilestore.v1alpha1` package.
        pub mod v1alpha1 {
            include!(concat!(env!("OUT_DIR"), "/parca.profilestore.v1alpha1.rs"));
        }
    }
}

/// The compiled schemas (a serialized `google.protobuf.FileDescriptorSet`),
/// for reading these messages by reflection.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
