//! RSS over time as stacked columns, one per interval, newest on the right:
//! file-backed at the bottom, in use above it, lazily freed on top, so the
//! top of each column is RSS and the colours show what it is made of.

use ratatui::{
    buffer::Buffer,
    layout::Rect,
    style::{Color, Style},
    widgets::Widget,
};

use crate::report::{format::Bytes, history::Point};

/// Eighths of a cell, bottom up.
const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
/// Columns for the scale on the left.
const SCALE_WIDTH: u16 = 10;

pub const IN_USE: Color = Color::Green;
pub const LAZILY_FREED: Color = Color::Yellow;
pub const FILE: Color = Color::Blue;

/// One interval split into the chart's parts, bottom up.
fn parts(point: &Point) -> [(u64, Color); 3] {
    let file = (point.file + point.shmem).min(point.rss);
    let lazyfree = point.lazyfree.min(point.rss - file);
    let in_use = point.rss - file - lazyfree;
    [(file, FILE), (in_use, IN_USE), (lazyfree, LAZILY_FREED)]
}

pub struct RssChart<'a> {
    /// Oldest first; the last ones that fit are drawn.
    pub points: &'a [Point],
}

impl Widget for RssChart<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        if area.height == 0 || area.width <= SCALE_WIDTH {
            return;
        }
        let columns = usize::from(area.width - SCALE_WIDTH);
        let shown = &self.points[self.points.len().saturating_sub(columns)..];
        let peak = shown.iter().map(|point| point.rss).max().unwrap_or(0);
        let dim = Style::default().fg(Color::DarkGray);
        buf.set_stringn(
            area.x,
            area.y,
            Bytes(peak).to_string(),
            usize::from(SCALE_WIDTH - 1),
            dim,
        );
        buf.set_stringn(
            area.x,
            area.bottom() - 1,
            "0 B",
            usize::from(SCALE_WIDTH - 1),
            dim,
        );
        if peak == 0 {
            return;
        }
        let eighths = u64::from(area.height) * 8;
        for (column, point) in shown.iter().enumerate() {
            let x = area.x + SCALE_WIDTH + column as u16;
            // Each part's top, in eighths of a cell from the bottom.
            let mut top = 0u64;
            let tops: Vec<(u64, Color)> = parts(point)
                .iter()
                .map(|&(bytes, color)| {
                    top += bytes;
                    ((top * eighths + peak / 2) / peak, color)
                })
                .collect();
            for row in 0..u64::from(area.height) {
                let (floor, ceiling) = (row * 8, row * 8 + 8);
                // The part that covers most of the cell's lower half is
                // its colour; the column's top may end inside the cell.
                let Some(&(part_top, color)) = tops.iter().find(|(top, _)| *top > floor) else {
                    break;
                };
                let column_top = tops.last().map_or(0, |(top, _)| *top);
                let filled = column_top.min(ceiling) - floor;
                let symbol = BLOCKS[(filled as usize).clamp(1, 8) - 1];
                let color = if part_top >= floor + 4 || part_top >= column_top {
                    color
                } else {
                    tops.iter()
                        .find(|(top, _)| *top > part_top)
                        .map_or(color, |(_, above)| *above)
                };
                let y = area.bottom() - 1 - row as u16;
                buf[(x, y)]
                    .set_char(symbol)
                    .set_style(Style::default().fg(color));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn point(rss: u64, file: u64, lazyfree: u64) -> Point {
        Point {
            rss,
            file,
            lazyfree,
            ..Point::default()
        }
    }

    #[test]
    fn parts_stack_up_to_rss() {
        let [(file, _), (in_use, _), (lazy, _)] = parts(&point(44 * MIB, 3 * MIB, 24 * MIB));
        assert_eq!((file, in_use, lazy), (3 * MIB, 17 * MIB, 24 * MIB));
        let [(file, _), (in_use, _), (lazy, _)] = parts(&point(MIB, 2 * MIB, MIB));
        assert_eq!((file, in_use, lazy), (MIB, 0, 0));
    }

    #[test]
    fn the_tallest_column_fills_the_height_and_the_newest_is_right() {
        let points: Vec<Point> = (1..=4).map(|i| point(i * 8 * MIB, 0, 0)).collect();
        let area = Rect::new(0, 0, SCALE_WIDTH + 2, 4);
        let mut buf = Buffer::empty(area);
        RssChart { points: &points }.render(area, &mut buf);
        let column = |x: u16| -> String { (0..4).map(|y| buf[(x, y)].symbol()).collect() };
        // Only the last two points fit; the last is the peak.
        assert_eq!(column(SCALE_WIDTH + 1), "████");
        assert_eq!(column(SCALE_WIDTH), " ███");
        assert!(buf[(0, 0)].symbol() == "3", "the scale names the peak");
    }
}
