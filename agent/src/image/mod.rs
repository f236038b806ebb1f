//! Images: pulls from OCI registries, a content store by digest, unpacked layers.
