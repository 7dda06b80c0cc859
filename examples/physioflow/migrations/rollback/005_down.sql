-- 005_down: undo 005_bhyt_insurance. Index, then constraints, then columns.
DROP INDEX insurance_info_bhyt_card_number_key;

ALTER TABLE insurance_info
    DROP CONSTRAINT insurance_info_bhyt_validity,
    DROP CONSTRAINT insurance_info_bhyt_card_consistent,
    DROP CONSTRAINT insurance_info_bhyt_province_code_format,
    DROP CONSTRAINT insurance_info_bhyt_benefit_level_range,
    DROP CONSTRAINT insurance_info_bhyt_object_code_format,
    DROP CONSTRAINT insurance_info_bhyt_card_number_format;

ALTER TABLE insurance_info
    DROP COLUMN bhyt_valid_to,
    DROP COLUMN bhyt_valid_from,
    DROP COLUMN bhyt_registered_facility,
    DROP COLUMN bhyt_province_code,
    DROP COLUMN bhyt_benefit_level,
    DROP COLUMN bhyt_object_code,
    DROP COLUMN bhyt_card_number;
