-- Municipalities' English names were GSI's romaji as it is ("Koriyama Shi"), which English texts then said
-- ("Evacuation order issued for Koriyama Shi"). The shipped list now holds the names with their kind in English,
-- as the municipalities name themselves ("Koriyama City", "Inawashiro Town", "Hinoemata Village"; Tokyo's
-- special wards "Chiyoda City"): ingest.municipalities.english_name. A database loaded before keeps its list
-- (nothing is reloaded into a non-empty table), so its romaji names are turned the same way here.
UPDATE municipalities
   SET name_en = regexp_replace(name_en, ' (Shi|Cho|Machi|Mura|Son|Ku)$',
                                ' ' || CASE right(name_ja, 1) WHEN '市' THEN 'City' WHEN '町' THEN 'Town'
                                                              WHEN '村' THEN 'Village' ELSE 'City' END)
 WHERE name_en ~ '. (Shi|Cho|Machi|Mura|Son|Ku)$' AND right(name_ja, 1) IN ('市', '町', '村', '区');
