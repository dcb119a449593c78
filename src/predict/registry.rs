//! Every block predictor, by the stable id the block directory records (`docs/FORMAT.md`):
//! how the decoder builds it from its directory bytes and payload, its name in reports, the
//! coarse-level feedback step the encoder gives it, and the entropy contexts its residuals
//! want. A new predictor is a module of its own plus one line in [`REGISTRY`].

use super::{fitted, interp, lorenzo, nglr, Predictor};
use crate::entropy::{Classes, ContextChoice, Contexts};
use crate::error::{Error, Result};

/// One predictor of the [`REGISTRY`].
pub struct Entry {
    /// The block directory's predictor byte.
    pub id: u8,
    /// Its name in `resid inspect`.
    pub name: &'static str,
    /// The decoder's predictor from the block's coarse step and kernel byte (directory bytes
    /// 2 and 3, both checked against [`Entry::coarse`] already) and its payload, with the
    /// length of the predictor's header there (the residual codes follow).
    pub build: Build,
    /// For a predictor with coarse levels (it visits points at strides of 2 and more), the
    /// coarse feedback step the encoder writes for feedback step `m`. `None`: no coarse levels,
    /// so directory bytes 2 and 3 must be 0.
    pub coarse: Option<fn(m: i64) -> u8>,
    /// What the range coder's model follows in its residuals.
    pub contexts: ContextChoice,
}

/// See [`Entry::build`].
pub type Build = fn(coarse: u8, kernel: u8, payload: &[u8]) -> Result<(Box<dyn Predictor>, usize)>;

/// Interpolated blocks: classes by level and pass, and far neighbours (which share a point's
/// parities, hence its level) for the contexts.
const fn interpolated(classes: Classes) -> ContextChoice {
    ContextChoice {
        classes,
        neighbours: Contexts::Far,
    }
}

/// Every predictor a chunk may name.
pub static REGISTRY: [Entry; 5] = [
    Entry {
        id: lorenzo::ID,
        name: "lorenzo",
        build: |_, _, _| Ok((Box::new(lorenzo::Lorenzo), 0)),
        coarse: None,
        contexts: ContextChoice::PLAIN,
    },
    Entry {
        id: interp::ID,
        name: "interp",
        build: |coarse, kernel, _| {
            let kernel = interp::kernel_of(kernel)?;
            Ok((Box::new(interp::Interp { coarse, kernel }), 0))
        },
        coarse: Some(interp::coarse_step),
        contexts: interpolated(Classes::Passes),
    },
    // Its weights are the chunk's (the WEIGHTS section): the pipeline builds it from them.
    Entry {
        id: nglr::ID,
        name: "nglr",
        build: |_, _, _| {
            Err(Error::Corrupt(
                "NGLR block in a chunk without a weights section".into(),
            ))
        },
        coarse: None,
        contexts: ContextChoice::PLAIN,
    },
    Entry {
        id: interp::MD_ID,
        name: "interp-md",
        build: |coarse, kernel, _| {
            let kernel = interp::kernel_of(kernel)?;
            Ok((Box::new(interp::InterpMd { coarse, kernel }), 0))
        },
        coarse: Some(interp::coarse_step),
        contexts: interpolated(Classes::OddCoordinates),
    },
    Entry {
        id: fitted::ID,
        name: "lorenzo-fitted",
        build: |_, _, payload| {
            Ok((
                Box::new(fitted::FittedLorenzo::read(payload)?),
                fitted::HEADER,
            ))
        },
        coarse: None,
        contexts: ContextChoice::PLAIN,
    },
];

/// The entry of predictor `id`, if there is one.
pub fn entry(id: u8) -> Option<&'static Entry> {
    REGISTRY.iter().find(|e| e.id == id)
}

/// The name of predictor `id` in reports.
pub fn name(id: u8) -> Option<&'static str> {
    entry(id).map(|e| e.name)
}

/// The contexts predictor `id`'s residuals are coded with (plain for an unknown id, which no
/// block decodes anyway).
pub fn contexts(id: u8) -> ContextChoice {
    entry(id).map_or(ContextChoice::PLAIN, |e| e.contexts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_are_unique() {
        for (k, e) in REGISTRY.iter().enumerate() {
            assert!(REGISTRY[..k]
                .iter()
                .all(|o| o.id != e.id && o.name != e.name));
            assert_eq!(entry(e.id).map(|o| o.name), Some(e.name));
        }
        assert!(entry(0).is_none() && entry(6).is_none());
    }

    #[test]
    fn the_contexts_and_coarse_steps_the_encoder_has_always_written() {
        // (id, classes, far neighbours, coarse step at m = 1 and 15): docs/FORMAT.md.
        for (id, classes, far, coarse) in [
            (1, Classes::Single, false, [0, 0]),
            (2, Classes::Passes, true, [0, 11]),
            (3, Classes::Single, false, [0, 0]),
            (4, Classes::OddCoordinates, true, [0, 11]),
            (5, Classes::Single, false, [0, 0]),
        ] {
            let c = contexts(id);
            assert_eq!((c.classes, c.neighbours == Contexts::Far), (classes, far));
            let step = |m| entry(id).and_then(|e| e.coarse).map_or(0, |rule| rule(m));
            assert_eq!([step(1), step(15)], coarse, "{id}");
        }
    }
}
