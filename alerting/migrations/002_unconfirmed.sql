-- Unconfirmed river-level alerts: a reading beyond the gauge's plausible rate of change raises a
-- staff-only alert of condition 'river_level_unconfirmed' at once; the next reading confirms it (the
-- public river_level alert takes over) or withdraws it as a spike (audit action alert.withdrawn).
ALTER TABLE alerts DROP CONSTRAINT IF EXISTS alerts_condition_check;
ALTER TABLE alerts ADD CONSTRAINT alerts_condition_check
    CHECK (condition IN ('river_level', 'river_level_unconfirmed', 'low_battery', 'fault', 'silent',
                         'evacuation_order'));
