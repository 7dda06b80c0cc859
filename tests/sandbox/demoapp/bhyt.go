package demoapp

import (
	"fmt"
	"unicode/utf8"
)

// BHYT is a parsed Vietnamese health-insurance (bảo hiểm y tế) card number.
//
// The 15-character number is: two letters naming the beneficiary group
// (the object code), one digit for the benefit level (1-5), two digits for
// the province that issued the card, and the holder's 10-digit social
// insurance number.
type BHYT struct {
	ObjectCode            string `json:"object_code"`
	BenefitLevel          int    `json:"benefit_level"`
	ProvinceCode          string `json:"province_code"`
	SocialInsuranceNumber string `json:"social_insurance_number"`
}

// BHYTLength is the number of characters of a card number.
const BHYTLength = 15

// objectCodes is the official list of beneficiary groups.
var objectCodes = map[string]bool{}

func init() {
	for _, c := range []string{
		"DN", "HX", "CH", "NN", "TK", "HC", "XK", "CA", "HT", "TB",
		"MS", "XB", "XN", "TN", "CC", "CK", "CB", "KC", "HD", "TE",
		"BT", "HN", "DT", "DK", "XD", "TS", "TC", "TQ", "TA", "TY",
		"HG", "LS", "PV", "CN", "HS", "SV", "GB", "GD", "NO", "QN",
		"CY", "XV",
	} {
		objectCodes[c] = true
	}
}

// IsObjectCode reports whether code is on the official list.
func IsObjectCode(code string) bool { return objectCodes[code] }

// ParseBHYT checks a card number against the format rules. It returns the
// parsed card, or every rule the number breaks (never both).
func ParseBHYT(s string) (*BHYT, []string) {
	if n := utf8.RuneCountInString(s); n != BHYTLength {
		return nil, []string{fmt.Sprintf("card number must be %d characters, got %d", BHYTLength, n)}
	}
	if len(s) != BHYTLength {
		return nil, []string{"card number must contain only ASCII letters and digits"}
	}
	var errs []string
	obj, level, prov, sin := s[0:2], s[2:3], s[3:5], s[5:15]
	switch {
	case !isUpper(obj):
		errs = append(errs, fmt.Sprintf("object code %q must be 2 uppercase letters", obj))
	case !objectCodes[obj]:
		errs = append(errs, fmt.Sprintf("object code %q is not on the official list", obj))
	}
	if !isDigits(level) || level[0] < '1' || level[0] > '5' {
		errs = append(errs, fmt.Sprintf("benefit level %q must be a digit from 1 to 5", level))
	}
	if !isDigits(prov) || prov == "00" {
		errs = append(errs, fmt.Sprintf("province code %q must be 2 digits from 01 to 99", prov))
	}
	if !isDigits(sin) {
		errs = append(errs, fmt.Sprintf("social insurance number %q must be 10 digits", sin))
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return &BHYT{
		ObjectCode:            obj,
		BenefitLevel:          int(level[0] - '0'),
		ProvinceCode:          prov,
		SocialInsuranceNumber: sin,
	}, nil
}

func isUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return s != ""
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
