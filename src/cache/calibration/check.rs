//! Calibrations checked against the detector they are used with. A calibration whose exit names
//! a stage that is another layer loads and never fires; one whose channel counts differ fails
//! mid-replay on a shape. Both are refused up front, in one line naming the file (or the
//! calibration) and the exit.

use super::detector::CacheableDetector;
use super::exits::ExitsFile;
use crate::cache::enabled::Exit;
use crate::detect::TeacherTarget;

impl ExitsFile {
    /// Whether these exits fit `det`: the model, the teacher's classes, and for every exit its
    /// layer name at its stage, network order, its channel count and its head's class count.
    /// Errors name the file it was read from.
    pub fn check_detector<D>(&self, det: &D) -> crate::Result<()>
    where
        D: CacheableDetector,
        D::Output: TeacherTarget,
    {
        let file = self
            .source
            .as_ref()
            .map_or_else(|| "exits.ron".to_string(), |p| p.display().to_string());
        let model = det.model_name();
        crate::ensure!(
            self.model == model,
            "{file}: calibrated for {}, not {model}",
            self.model
        );
        crate::ensure!(
            self.classes == det.classes() && self.positive == det.positive(),
            "{file}: {} classes with positive class {}, but {model} has {} with positive {}",
            self.classes,
            self.positive,
            det.classes(),
            det.positive()
        );
        let mut last = None;
        for e in &self.exits {
            let head = e.head.as_ref().map(|h| h.classes);
            check_exit(det, &file, &e.layer, e.stage, e.channels, head, &mut last)?;
        }
        Ok(())
    }
}

/// [`ExitsFile::check_detector`] for exits already loaded (what perception holds): each exit's
/// layer at its stage, network order, its head's input channels and classes against `det`.
/// `origin` names the calibration in errors.
pub fn check_exits<D>(det: &D, origin: &str, model: &str, exits: &[Exit]) -> crate::Result<()>
where
    D: CacheableDetector,
    D::Output: TeacherTarget,
{
    crate::ensure!(
        model == det.model_name(),
        "{origin}: calibration is for {model}, not {}",
        det.model_name()
    );
    let mut last = None;
    for e in exits {
        let (channels, classes) = (e.head.in_channels, Some(e.head.arch.classes));
        check_exit(det, origin, &e.layer, e.stage, channels, classes, &mut last)?;
    }
    Ok(())
}

/// One exit against `det`; `last` is the previous exit's stage (exits run in network order).
fn check_exit<D>(
    det: &D,
    origin: &str,
    layer: &str,
    stage: usize,
    channels: usize,
    head_classes: Option<usize>,
    last: &mut Option<usize>,
) -> crate::Result<()>
where
    D: CacheableDetector,
    D::Output: TeacherTarget,
{
    let model = det.model_name();
    let names = det.stage_names();
    let at = format!("{origin}: exit {layer}");
    crate::ensure!(
        stage < names.len(),
        "{at}: stage {stage} does not exist ({model} has stages 0..{})",
        names.len().saturating_sub(1)
    );
    crate::ensure!(
        names[stage] == layer,
        "{at}: stage {stage} of {model} is {}, not {layer}",
        names[stage]
    );
    crate::ensure!(
        last.is_none_or(|l| stage > l),
        "{at}: exits must be in network order, each layer once (stage {stage} follows {})",
        last.unwrap_or(0)
    );
    *last = Some(stage);
    let want = det.stage_channels(stage);
    crate::ensure!(
        channels == want,
        "{at}: {channels} channels, but {model}'s {layer} has {want}"
    );
    if let Some(c) = head_classes {
        crate::ensure!(
            c == det.classes(),
            "{at}: head has {c} classes, {model} has {}",
            det.classes()
        );
    }
    Ok(())
}
