//! One frame of the screen, top to bottom: the header, the numbers, the
//! chart of RSS, the trend, the stacks holding the most, the calls that
//! gave the most back, what grew, the program's output, and the status
//! line. The tables share what is left of the height; every line is cut to
//! the width, stacks keeping their innermost frames.

use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::Paragraph,
    Frame,
};

use super::{
    chart::{self, RssChart},
    Shown, View,
};
use crate::report::{
    format::{cut, plural, stack_text, width_of, wrap, Bytes, Count, Delta},
    live::{advice_calls, advice_summary, header, trend_words},
    snapshot::Snapshot,
    verdict::Parts,
};

/// Lines of the program's output shown at most.
pub const OUTPUT_LINES_MAX: usize = 4;
/// Frames a stack gets at most on the screen (the width usually cuts
/// sooner).
const FRAMES: usize = 12;
/// Advice kinds shown on the numbers line.
const ADVICE_SHOWN: usize = 3;

fn bold() -> Style {
    Style::default().add_modifier(Modifier::BOLD)
}

fn dim() -> Style {
    Style::default().fg(Color::DarkGray)
}

pub fn screen(frame: &mut Frame<'_>, snapshot: &Snapshot, shown: &Shown, output: &[String]) {
    let area = frame.area();
    let width = usize::from(area.width);
    let numbers = numbers(snapshot, shown, width);
    let output_lines = match area.height {
        0..=20 => 1,
        21..=30 => 2,
        _ => OUTPUT_LINES_MAX,
    }
    .min(output.len());
    let tables = [
        holders(snapshot, shown.view),
        releasers(snapshot),
        growth(snapshot),
    ];
    // The chart gets what the tables leave, between a fifth and half of
    // the height.
    let fixed = 1 + numbers.len() + 1 + output_lines + 1;
    let free = usize::from(area.height).saturating_sub(fixed);
    let wanted: usize = tables.iter().map(Table::wanted).sum();
    let chart_height = free
        .saturating_sub(wanted)
        .clamp(usize::from(area.height / 5), free / 2)
        .max(3) as u16;
    let [top, numbers_area, chart_area, tables_area, output_area, status_area] =
        Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(numbers.len() as u16),
            Constraint::Length(chart_height + 1),
            Constraint::Min(0),
            Constraint::Length(output_lines as u16),
            Constraint::Length(1),
        ])
        .areas(area);

    frame.render_widget(
        Paragraph::new(Line::styled(
            cut(&header(snapshot), width).into_owned(),
            bold(),
        )),
        top,
    );
    frame.render_widget(Paragraph::new(numbers), numbers_area);
    rss_chart(frame, snapshot, chart_area);
    stack_tables(frame, &tables, tables_area);
    let output: Vec<Line<'_>> = output[output.len() - output_lines..]
        .iter()
        .map(|line| Line::styled(cut(line, width).into_owned(), dim()))
        .collect();
    frame.render_widget(Paragraph::new(output), output_area);
    let status = if shown.status.is_empty() {
        format!(
            "q quit with the final report · t show {} · p pprof profile into {}",
            match shown.view {
                View::InUse => "lazily freed",
                View::LazilyFreed => "in use",
            },
            shown.profiles_to
        )
    } else {
        shown.status.clone()
    };
    frame.render_widget(
        Paragraph::new(Line::styled(
            cut(&status, width).into_owned(),
            Style::default().add_modifier(Modifier::REVERSED),
        )),
        status_area,
    );
}

/// The numbers: RSS and its parts, then what happened, wrapped between
/// words.
fn numbers(snapshot: &Snapshot, shown: &Shown, width: usize) -> Vec<Line<'static>> {
    let parts = Parts::of(snapshot);
    let change = snapshot
        .previous_rss
        .map(|previous| format!(" ({})", Delta(snapshot.rss() as i64 - previous as i64)))
        .unwrap_or_default();
    let mut text = format!(
        "RSS {}{change} = in use {} + lazily freed {} + file {}",
        Bytes(snapshot.rss()),
        Bytes(parts.in_use),
        Bytes(parts.lazily_freed),
        Bytes(parts.file),
    );
    if parts.before_attach > 0 {
        text.push_str(&format!(" + before attach {}", Bytes(parts.before_attach)));
    }
    text.push_str(&format!(
        " + unexplained {}{}",
        Bytes(parts.unexplained),
        match &snapshot.kernel {
            Some(kernel) => format!(" (status says {})", Bytes(kernel.status.rss)),
            None => " (the process is gone)".to_owned(),
        }
    ));
    let faults = &snapshot.activity.faults;
    let mut activity = format!(
        "faults {} ({} paged in) · records {} seen, {} lost",
        Count(faults.count),
        Bytes(faults.paged_in_bytes()),
        Count(snapshot.records),
        Count(snapshot.lost.records()),
    );
    let advice = advice_summary(&advice_calls(snapshot), ADVICE_SHOWN);
    if !advice.is_empty() {
        activity.push_str(&format!(" · madvise {}", advice.join(" · ")));
    }
    let mut lines: Vec<Line<'static>> = wrap(&text, Some(width), "  ")
        .lines()
        .map(|line| Line::from(line.to_owned()))
        .collect();
    lines.extend(
        wrap(&activity, Some(width), "  ")
            .lines()
            .map(|line| Line::styled(line.to_owned(), dim())),
    );
    for child in &shown.children {
        lines.push(Line::from(cut(child, width).into_owned()));
    }
    lines
}

fn rss_chart(frame: &mut Frame<'_>, snapshot: &Snapshot, area: Rect) {
    let [legend, chart_area] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    let legend_line = Line::from(vec![
        Span::raw("RSS: "),
        Span::styled("█ in use ", Style::default().fg(chart::IN_USE)),
        Span::styled("█ lazily freed ", Style::default().fg(chart::LAZILY_FREED)),
        Span::styled("█ file ", Style::default().fg(chart::FILE)),
        Span::styled(format!("· trend: {}", trend_words(snapshot)), dim()),
    ]);
    frame.render_widget(Paragraph::new(legend_line), legend);
    frame.render_widget(
        RssChart {
            points: &snapshot.recent,
        },
        chart_area,
    );
}

/// A table: a title line, then rows of a figure and a stack.
struct Table {
    title: String,
    rows: Vec<(String, Vec<String>)>,
    /// Said when there are no rows.
    empty: &'static str,
}

impl Table {
    fn lines(&self, width: usize, height: usize) -> Vec<Line<'static>> {
        let mut lines = vec![Line::styled(cut(&self.title, width).into_owned(), bold())];
        if self.rows.is_empty() {
            lines.push(Line::styled(cut(self.empty, width).into_owned(), dim()));
        }
        for (figure, frames) in self.rows.iter().take(height.saturating_sub(1)) {
            let room = width.saturating_sub(width_of(figure));
            lines.push(Line::from(vec![
                Span::styled(figure.clone(), bold()),
                Span::raw(stack_text(frames, FRAMES, Some(room))),
            ]));
        }
        lines
    }

    /// Lines it would use, with every row.
    fn wanted(&self) -> usize {
        1 + self.rows.len().max(1)
    }
}

fn stack_tables(frame: &mut Frame<'_>, tables: &[Table], area: Rect) {
    let heights = share_height(
        usize::from(area.height),
        &tables.iter().map(Table::wanted).collect::<Vec<_>>(),
    );
    let areas = Layout::vertical(heights.iter().map(|&h| Constraint::Length(h as u16))).split(area);
    for ((table, area), height) in tables.iter().zip(areas.iter()).zip(heights) {
        let lines = table.lines(usize::from(area.width), height);
        frame.render_widget(Paragraph::new(lines), *area);
    }
}

/// Splits `height` lines between tables that want `wanted` each: every
/// table gets its title and a row first, then rows go round in turn.
fn share_height(height: usize, wanted: &[usize]) -> Vec<usize> {
    let mut given = vec![0; wanted.len()];
    let mut left = height;
    for round in 1.. {
        let mut gave = false;
        for (index, &want) in wanted.iter().enumerate() {
            if left == 0 {
                return given;
            }
            let step = if round == 1 { 2.min(want) } else { 1 };
            if given[index] + step <= want && step > 0 {
                given[index] += step.min(left);
                left -= step.min(left);
                gave = true;
            }
        }
        if !gave {
            break;
        }
    }
    given
}

/// The stacks holding the most, ranked by the view's bytes.
fn holders(snapshot: &Snapshot, view: View) -> Table {
    let mut rows: Vec<_> = snapshot
        .top_stacks
        .iter()
        .map(|row| {
            let (shown, other, other_name) = match view {
                View::InUse => (row.in_use, row.lazyfree, "lazy"),
                View::LazilyFreed => (row.lazyfree, row.in_use, "in use"),
            };
            (shown, other, other_name, &row.frames)
        })
        .filter(|(shown, ..)| *shown > 0)
        .collect();
    rows.sort_by_key(|(shown, ..)| std::cmp::Reverse(*shown));
    Table {
        title: match view {
            View::InUse => "In use, by the stack that faulted it in (t: lazily freed)",
            View::LazilyFreed => {
                "Lazily freed (MADV_FREE, still in RSS), by the stack that faulted it in (t: in use)"
            }
        }
        .to_owned(),
        rows: rows
            .into_iter()
            .map(|(shown, other, other_name, frames)| {
                let other = if other > 0 {
                    format!("{other_name} {}", Bytes(other))
                } else {
                    String::new()
                };
                (
                    format!("{:>10} {:<16} ", Bytes(shown).to_string(), other),
                    frames.clone(),
                )
            })
            .collect(),
        empty: match view {
            View::InUse => "  nothing faulted in since attaching",
            View::LazilyFreed => "  nothing lazily freed",
        },
    }
}

/// The calls that took the most out of RSS (or marked it lazily freed).
fn releasers(snapshot: &Snapshot) -> Table {
    Table {
        title: "Given back, by call and stack".to_owned(),
        rows: snapshot
            .top_calls
            .iter()
            .filter(|row| row.resident_bytes > 0)
            .map(|row| {
                (
                    format!(
                        "{:>10} {:<14} {:>9}  ",
                        Bytes(row.resident_bytes).to_string(),
                        row.call,
                        plural(row.calls, "call", "calls"),
                    ),
                    row.frames.clone(),
                )
            })
            .collect(),
        empty: "  nothing given back yet",
    }
}

fn growth(snapshot: &Snapshot) -> Table {
    Table {
        title: "Grew since the first interval".to_owned(),
        rows: snapshot
            .growth
            .iter()
            .map(|row| {
                (
                    format!("{:>10}  ", Delta(row.grown).to_string()),
                    row.frames.clone(),
                )
            })
            .collect(),
        empty: "  nothing grew",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn height_goes_round_the_tables() {
        assert_eq!(share_height(20, &[11, 4, 3]), [11, 4, 3]);
        assert_eq!(share_height(9, &[11, 4, 3]), [3, 3, 3]);
        assert_eq!(share_height(3, &[11, 4, 3]), [2, 1, 0]);
        assert_eq!(share_height(0, &[11, 4]), [0, 0]);
    }
}
