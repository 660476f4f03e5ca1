-- Stations stored before 076 with a threshold at or below 0 m (-1.0/-0.5/-0.2/0.0 were accepted then): 076 gave
-- every station the 欠測 sentinel 0.0 (missing_at_or_below: telemetry exports write 欠測 as 0, e.g. the 持世寺
-- export's 0.0 rows of 2023/07/03 10:10-10:40, shared/data/PROVENANCE.md), so such a gauge's stages at or below
-- 0 m were read as missing and it never reached those thresholds: it never alerted.
-- A threshold at or below 0 m says the gauge reads such stages (a gauge on T.P. or a low datum), so 0 is no
-- sentinel of it: it has none (NULL: every stage is a stage; ingest.registry.MISSING_RULE), as a station file
-- or edit must say for it now (Station.validate). Not a made-up value below its lowest threshold: its telemetry
-- was never seen to write one, and a stage read there as missing would never let its level step down by reading.
-- Only stations whose sentinel lies at or above one of their thresholds change; NULL thresholds are ignored.
-- stations is a plain table under TimescaleDB too, so one file serves both variants.
UPDATE stations SET missing_at_or_below = NULL
WHERE missing_at_or_below IS NOT NULL
  AND least(th_standby, th_caution, th_evacuation, th_danger, th_obs_start, th_crisis, th_overflow)
      <= missing_at_or_below;
