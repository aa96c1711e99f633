//! Consistency checks for a decoded profile.
//!
//! Protobuf decoding only checks the wire format; these checks make sure
//! every string index and id in the profile points at something, so that code
//! reading the profile never has to handle a dangling reference.

use std::collections::HashSet;

use crate::proto::{Label, Profile, ValueType};

/// Checks that `profile` is self-consistent, or says what is wrong with it.
///
/// Checked: the string table starts with "", every string index is in range,
/// mapping, location and function ids are non-zero and unique, every id
/// referred to exists, and every sample has one value per sample type.
pub(crate) fn validate(profile: &Profile) -> Result<(), String> {
    if profile.string_table.first().map(String::as_str) != Some("") {
        return Err("the string table does not start with the empty string".to_owned());
    }
    let strings = StringIndexes(profile.string_table.len());

    for value_type in &profile.sample_type {
        strings.check_value_type(value_type, "sample type")?;
    }
    if let Some(period_type) = &profile.period_type {
        strings.check_value_type(period_type, "period type")?;
    }
    strings.check(profile.drop_frames, || "drop_frames".to_owned())?;
    strings.check(profile.keep_frames, || "keep_frames".to_owned())?;
    strings.check(profile.default_sample_type, || {
        "default_sample_type".to_owned()
    })?;
    strings.check(profile.doc_url, || "doc_url".to_owned())?;
    for &comment in &profile.comment {
        strings.check(comment, || "comment".to_owned())?;
    }

    let mapping_ids = unique_ids("mapping", profile.mapping.iter().map(|m| m.id))?;
    for mapping in &profile.mapping {
        strings.check(mapping.filename, || {
            format!("mapping {} filename", mapping.id)
        })?;
        strings.check(mapping.build_id, || {
            format!("mapping {} build id", mapping.id)
        })?;
    }

    let function_ids = unique_ids("function", profile.function.iter().map(|f| f.id))?;
    for function in &profile.function {
        let what = |field: &str| format!("function {} {field}", function.id);
        strings.check(function.name, || what("name"))?;
        strings.check(function.system_name, || what("system name"))?;
        strings.check(function.filename, || what("filename"))?;
    }

    let location_ids = unique_ids("location", profile.location.iter().map(|l| l.id))?;
    for location in &profile.location {
        if location.mapping_id != 0 && !mapping_ids.contains(&location.mapping_id) {
            return Err(format!(
                "location {} refers to mapping {}, which does not exist",
                location.id, location.mapping_id
            ));
        }
        if let Some(line) = location
            .line
            .iter()
            .find(|line| !function_ids.contains(&line.function_id))
        {
            return Err(format!(
                "location {} refers to function {}, which does not exist",
                location.id, line.function_id
            ));
        }
    }

    let value_count = profile.sample_type.len();
    for (n, sample) in profile.sample.iter().enumerate() {
        if sample.value.len() != value_count {
            return Err(format!(
                "sample {n} has {} values but the profile has {value_count} sample types",
                sample.value.len()
            ));
        }
        if let Some(id) = sample
            .location_id
            .iter()
            .find(|id| !location_ids.contains(id))
        {
            return Err(format!(
                "sample {n} refers to location {id}, which does not exist"
            ));
        }
        for label in &sample.label {
            strings.check_label(label, n)?;
        }
    }
    Ok(())
}

/// Range check for indexes into a string table of the given length.
struct StringIndexes(usize);

impl StringIndexes {
    fn check(&self, index: i64, what: impl FnOnce() -> String) -> Result<(), String> {
        match usize::try_from(index) {
            Ok(index) if index < self.0 => Ok(()),
            _ => Err(format!(
                "{} is string {index}, but the string table has {} entries",
                what(),
                self.0
            )),
        }
    }

    fn check_value_type(&self, value_type: &ValueType, what: &str) -> Result<(), String> {
        self.check(value_type.r#type, || format!("{what} name"))?;
        self.check(value_type.unit, || format!("{what} unit"))
    }

    fn check_label(&self, label: &Label, sample: usize) -> Result<(), String> {
        let what = |field: &str| format!("sample {sample} label {field}");
        self.check(label.key, || what("key"))?;
        self.check(label.str, || what("value"))?;
        self.check(label.num_unit, || what("unit"))
    }
}

/// The ids of one kind of entry, after checking that none is 0 (which means
/// "none" in the format) and none repeats.
fn unique_ids(kind: &str, ids: impl Iterator<Item = u64>) -> Result<HashSet<u64>, String> {
    let mut seen = HashSet::new();
    for id in ids {
        if id == 0 {
            return Err(format!("a {kind} has id 0, which is reserved"));
        }
        if !seen.insert(id) {
            return Err(format!("two {kind}s have id {id}"));
        }
    }
    Ok(seen)
}
