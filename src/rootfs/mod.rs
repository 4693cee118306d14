//! Initramfs images: kmatrix's own static init compiled for the target, an
//! optional busybox userland, written as a gzip'd newc cpio by kmatrix itself.

pub mod busybox;
pub mod cpio;
pub mod image;
pub mod init;
