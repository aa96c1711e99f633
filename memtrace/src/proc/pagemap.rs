//! /proc/PID/pagemap: one 64-bit entry per virtual page.

use crate::model::reconcile::PageEntry;

const PRESENT: u64 = 1 << 63;
const SWAPPED: u64 = 1 << 62;
const FILE_OR_SHARED: u64 = 1 << 61;
const PFN_MASK: u64 = (1 << 55) - 1;

/// Decodes little-endian pagemap entries; a trailing partial entry is
/// ignored.
pub fn decode_pagemap(raw: &[u8]) -> Vec<PageEntry> {
    raw.chunks_exact(8)
        .map(|chunk| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(chunk);
            let entry = u64::from_le_bytes(bytes);
            if entry & PRESENT != 0 {
                PageEntry::Present {
                    pfn: entry & PFN_MASK,
                    file_or_shared: entry & FILE_OR_SHARED != 0,
                }
            } else if entry & SWAPPED != 0 {
                PageEntry::Swapped
            } else {
                PageEntry::Absent
            }
        })
        .collect()
}

/// The frame number of the kernel's shared zero page, which reads of
/// never-written anonymous memory map and which RSS does not count. Found by
/// reading a fresh page of our own and looking it up in our own pagemap;
/// `None` when frame numbers are hidden (no CAP_SYS_ADMIN).
pub fn zero_page_pfn() -> Option<u64> {
    const PAGE: usize = 4096;
    // SAFETY: a private anonymous mapping of one page, unmapped below.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: reading the page we just mapped maps the zero page.
    unsafe { std::ptr::read_volatile(page.cast::<u8>()) };
    let entry = std::fs::File::open("/proc/self/pagemap")
        .ok()
        .and_then(|file| {
            use std::os::unix::fs::FileExt;
            let mut raw = [0u8; 8];
            file.read_exact_at(&mut raw, (page as u64 / PAGE as u64) * 8)
                .ok()?;
            decode_pagemap(&raw).pop()
        });
    // SAFETY: unmapping the page mapped above.
    unsafe { libc::munmap(page, PAGE) };
    match entry {
        Some(PageEntry::Present { pfn, .. }) if pfn != 0 => Some(pfn),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_three_states() {
        let entries = [PRESENT | FILE_OR_SHARED | 0x1234, SWAPPED | 7, 0];
        let raw: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
        assert_eq!(
            decode_pagemap(&raw),
            vec![
                PageEntry::Present {
                    pfn: 0x1234,
                    file_or_shared: true
                },
                PageEntry::Swapped,
                PageEntry::Absent
            ]
        );
    }

    #[test]
    fn ignores_a_partial_entry() {
        assert!(decode_pagemap(&[1, 2, 3]).is_empty());
    }
}
