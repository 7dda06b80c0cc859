-- 005_bhyt_insurance: Vietnamese national health-insurance (BHYT) card data.
--
-- Expand-only: new nullable columns and constraints that only look at the new
-- columns, so the running (old) application version keeps working during a
-- blue-green switch — no bgrun:contract marker needed.
--
-- Card code layout (15 characters), e.g. DN4797912345678:
--   chars 1-2   object code (mã đối tượng), e.g. DN, HC, HT, TE, CN
--   char  3     benefit level (mức hưởng) 1..5
--   chars 4-5   province code (mã tỉnh) of the issuing social-security office
--   chars 6-15  the holder's 10-digit social-insurance number (mã số BHXH)
--
-- ALTER TABLE takes an ACCESS EXCLUSIVE lock on insurance_info, and the new
-- CHECK constraints are verified with one scan of the (small: one row per
-- card) table while it is held. Give up rather than queue behind a long
-- transaction and stall every query on the table behind us; the runner
-- rolls the file back and the migration can simply be retried.
SET LOCAL lock_timeout = '5s';

ALTER TABLE insurance_info
    ADD COLUMN bhyt_card_number         varchar(15),
    ADD COLUMN bhyt_object_code         char(2),
    ADD COLUMN bhyt_benefit_level       smallint,
    ADD COLUMN bhyt_province_code       char(2),
    ADD COLUMN bhyt_registered_facility text,
    ADD COLUMN bhyt_valid_from          date,
    ADD COLUMN bhyt_valid_to            date;

ALTER TABLE insurance_info
    ADD CONSTRAINT insurance_info_bhyt_card_number_format
        CHECK (bhyt_card_number ~ '^[A-Z]{2}[1-5][0-9]{2}[0-9]{10}$'),
    ADD CONSTRAINT insurance_info_bhyt_object_code_format
        CHECK (bhyt_object_code ~ '^[A-Z]{2}$'),
    ADD CONSTRAINT insurance_info_bhyt_benefit_level_range
        CHECK (bhyt_benefit_level BETWEEN 1 AND 5),
    ADD CONSTRAINT insurance_info_bhyt_province_code_format
        CHECK (bhyt_province_code ~ '^[0-9]{2}$'),
    -- the decoded parts must agree with the card code when both are present
    ADD CONSTRAINT insurance_info_bhyt_card_consistent CHECK (
        bhyt_card_number IS NULL OR (
            (bhyt_object_code IS NULL OR bhyt_object_code = substr(bhyt_card_number, 1, 2)) AND
            (bhyt_benefit_level IS NULL OR bhyt_benefit_level::text = substr(bhyt_card_number, 3, 1)) AND
            (bhyt_province_code IS NULL OR bhyt_province_code = substr(bhyt_card_number, 4, 2))
        )),
    ADD CONSTRAINT insurance_info_bhyt_validity
        CHECK (bhyt_valid_to IS NULL OR bhyt_valid_from IS NULL OR bhyt_valid_to >= bhyt_valid_from);

-- One insurance row per card. NULLs (non-BHYT rows) are left out of the index.
-- Plain CREATE INDEX (not CONCURRENTLY) keeps the file transactional; it
-- blocks writes to insurance_info only for the duration of the build.
CREATE UNIQUE INDEX insurance_info_bhyt_card_number_key ON insurance_info (bhyt_card_number)
    WHERE bhyt_card_number IS NOT NULL;

COMMENT ON COLUMN insurance_info.bhyt_card_number IS 'BHYT card code (mã thẻ BHYT), 15 chars: object code, benefit level 1-5, province code, 10-digit social-insurance number.';
COMMENT ON COLUMN insurance_info.bhyt_object_code IS 'Beneficiary object code (mã đối tượng), first two letters of the card code.';
COMMENT ON COLUMN insurance_info.bhyt_benefit_level IS 'Benefit level (mức hưởng) 1-5, third character of the card code; decides the share BHYT pays.';
COMMENT ON COLUMN insurance_info.bhyt_province_code IS 'Two-digit province code (mã tỉnh) of the issuing office, characters 4-5 of the card code.';
COMMENT ON COLUMN insurance_info.bhyt_registered_facility IS 'Registered primary-care facility (nơi đăng ký khám chữa bệnh ban đầu): code and/or name as printed on the card.';
COMMENT ON COLUMN insurance_info.bhyt_valid_from IS 'Card valid from (giá trị sử dụng từ ngày).';
COMMENT ON COLUMN insurance_info.bhyt_valid_to IS 'Card valid to, inclusive (đến ngày).';
