package demoapp

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseBHYTValid(t *testing.T) {
	cases := map[string]BHYT{
		"DN4010123456789": {"DN", 4, "01", "0123456789"},
		"HT1790000000001": {"HT", 1, "79", "0000000001"},
		"XV5999999999999": {"XV", 5, "99", "9999999999"},
		"TE2480123456780": {"TE", 2, "48", "0123456780"},
	}
	for in, want := range cases {
		got, errs := ParseBHYT(in)
		if errs != nil || got == nil || *got != want {
			t.Errorf("ParseBHYT(%q) = %+v, %q; want %+v", in, got, errs, want)
		}
	}
}

func TestParseBHYTInvalid(t *testing.T) {
	cases := []struct {
		in   string
		want []string // substrings, one per expected error, in order
	}{
		{"", []string{"must be 15 characters, got 0"}},
		{"DN401012345678", []string{"must be 15 characters, got 14"}},
		{"DN40101234567890", []string{"must be 15 characters, got 16"}},
		{"ĐN4010123456789", []string{"only ASCII"}},
		{"dn4010123456789", []string{`object code "dn" must be 2 uppercase letters`}},
		{"ZZ4010123456789", []string{`object code "ZZ" is not on the official list`}},
		{"D14010123456789", []string{"must be 2 uppercase letters"}},
		{"DN0010123456789", []string{`benefit level "0"`}},
		{"DN6010123456789", []string{`benefit level "6"`}},
		{"DNX010123456789", []string{`benefit level "X"`}},
		{"DN4000123456789", []string{`province code "00"`}},
		{"DN4A10123456789", []string{`province code "A1"`}},
		{"DN401012345678X", []string{`social insurance number "012345678X"`}},
		{"DN401 123456789", []string{`social insurance number " 123456789"`}},
		{"ZZ7000123456789", []string{"not on the official list", `benefit level "7"`, `province code "00"`}},
	}
	for _, c := range cases {
		got, errs := ParseBHYT(c.in)
		if got != nil {
			t.Errorf("ParseBHYT(%q) accepted: %+v", c.in, got)
			continue
		}
		if len(errs) != len(c.want) {
			t.Errorf("ParseBHYT(%q) errors %q, want %d", c.in, errs, len(c.want))
			continue
		}
		for i, w := range c.want {
			if !strings.Contains(errs[i], w) {
				t.Errorf("ParseBHYT(%q) error %d = %q, want it to contain %q", c.in, i, errs[i], w)
			}
		}
	}
}

func TestEveryOfficialObjectCode(t *testing.T) {
	codes := strings.Fields("DN HX CH NN TK HC XK CA HT TB MS XB XN TN CC CK CB KC HD TE BT HN DT DK XD TS TC TQ TA TY HG LS PV CN HS SV GB GD NO QN CY XV")
	if len(codes) != 42 || len(objectCodes) != 42 {
		t.Fatalf("official list has 42 codes; test has %d, table has %d", len(codes), len(objectCodes))
	}
	for _, c := range codes {
		if _, errs := ParseBHYT(c + "3010123456789"); errs != nil {
			t.Errorf("%s rejected: %q", c, errs)
		}
	}
}

func TestLoadBehavior(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "behaviors.json")
	os.WriteFile(path, []byte(`{"v2": {"crash_after_s": 20, "ready_after_s": 5, "never_ready": true,
		"fail_paths": ["/api/v1/service-codes"], "error_logs_per_s": 3, "slow_ms": 2000, "exit_code": 3},
		"v3": {"crash_after_s": 1}}`), 0o644)
	b, err := LoadBehavior(path, "v2")
	if err != nil {
		t.Fatal(err)
	}
	three := 3
	want := Behavior{CrashAfterS: 20, ExitCode: &three, ReadyAfterS: 5, NeverReady: true,
		FailPaths: []string{"/api/v1/service-codes"}, ErrorLogsPerS: 3, SlowMs: 2000}
	if !reflect.DeepEqual(b, want) {
		t.Errorf("v2: got %+v, want %+v", b, want)
	}
	if b, _ := LoadBehavior(path, "v3"); b.exitCode() != 1 {
		t.Errorf("default exit code %d, want 1", b.exitCode())
	}
	if b, err := LoadBehavior(path, "v1"); err != nil || !reflect.DeepEqual(b, Behavior{}) {
		t.Errorf("unlisted version: %+v, %v", b, err)
	}
	if b, err := LoadBehavior(filepath.Join(dir, "missing.json"), "v2"); err != nil || !reflect.DeepEqual(b, Behavior{}) {
		t.Errorf("missing file: %+v, %v", b, err)
	}
	os.WriteFile(path, []byte(`{"v2": `), 0o644)
	if _, err := LoadBehavior(path, "v2"); err == nil {
		t.Error("broken JSON accepted")
	}
}
