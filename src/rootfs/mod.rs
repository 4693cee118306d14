//! Guest userlands: kmatrix's own static init compiled for the target and
//! an optional busybox, written as a gzip'd newc cpio by kmatrix itself
//! (the initramfs) or as an ext4 disk root (`disk`); and a whole Debian
//! per arch (`debian`).

pub mod busybox;
pub mod cpio;
pub mod debian;
pub mod disk;
pub mod image;
pub mod init;
