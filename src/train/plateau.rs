//! ReduceLROnPlateau as torch.optim.lr_scheduler does it (mode "min", relative threshold 1e-4):
//! the learning rate is multiplied by `factor` once the validation loss has not improved for
//! more than `patience` evaluations.

#[derive(Debug, Clone, PartialEq)]
pub struct Plateau {
    pub factor: f32,
    pub patience: usize,
    pub best: f32,
    pub bad_evaluations: usize,
}

impl Plateau {
    pub fn new(factor: f32, patience: usize) -> Plateau {
        Plateau {
            factor,
            patience,
            best: f32::INFINITY,
            bad_evaluations: 0,
        }
    }

    /// Records a validation loss; returns the factor to apply to the learning rate (1 or
    /// `factor`).
    pub fn observe(&mut self, val_loss: f32) -> f32 {
        if val_loss < self.best * (1.0 - 1e-4) {
            self.best = val_loss;
            self.bad_evaluations = 0;
            return 1.0;
        }
        self.bad_evaluations += 1;
        if self.bad_evaluations > self.patience {
            self.bad_evaluations = 0;
            return self.factor;
        }
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_after_patience_evaluations_without_improvement() {
        let mut p = Plateau::new(0.5, 2);
        assert_eq!(p.observe(3.0), 1.0);
        assert_eq!(p.observe(2.0), 1.0);
        assert_eq!(p.observe(2.0), 1.0); // 1 bad
        assert_eq!(p.observe(2.5), 1.0); // 2 bad
        assert_eq!(p.observe(2.1), 0.5); // 3 bad > patience: reduce, count restarts
        assert_eq!(p.observe(2.1), 1.0);
        assert_eq!(p.observe(1.0), 1.0); // improvement resets
        assert_eq!(p.best, 1.0);
    }
}
