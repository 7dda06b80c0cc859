package infra

import (
	"net/http/httptest"
	"testing"
)

type testFault struct {
	FaultRule
	Status int `json:"status"`
}

func arm(t *testing.T, fs *Faults[testFault, *testFault], f testFault) {
	t.Helper()
	if err := f.Compile(); err != nil {
		t.Fatal(err)
	}
	fs.Add(&f)
}

func TestFaultsMatchAndCount(t *testing.T) {
	var fs Faults[testFault, *testFault]
	if l := fs.List(); l == nil || len(l) != 0 {
		t.Fatalf("empty list: %#v", l)
	}
	arm(t, &fs, testFault{FaultRule{Method: "put", Path: "^/b/k$"}, 500})           // count 0 = 1
	arm(t, &fs, testFault{FaultRule{Method: "*", Path: "uploads", Count: -1}, 503}) // until cleared
	arm(t, &fs, testFault{FaultRule{Path: "^/b/x$", Count: 2}, 409})                // any method
	if fs.List()[0].Count != 1 {
		t.Fatalf("a count of 0 is 1: %+v", fs.List()[0])
	}
	if f := fs.Take(httptest.NewRequest("GET", "/b/k", nil)); f != nil {
		t.Fatalf("a PUT fault hit a GET: %+v", f)
	}
	if f := fs.Take(httptest.NewRequest("PUT", "/b/k", nil)); f == nil || f.Status != 500 {
		t.Fatalf("PUT /b/k (method case-insensitive): %+v", f)
	}
	if f := fs.Take(httptest.NewRequest("PUT", "/b/k", nil)); f != nil {
		t.Fatalf("a count-1 fault hit twice: %+v", f)
	}
	for i := 0; i < 3; i++ { // matched against path?query too
		if f := fs.Take(httptest.NewRequest("POST", "/b/big?uploads=", nil)); f == nil || f.Status != 503 {
			t.Fatalf("hit %d of a -1 fault: %+v", i, f)
		}
	}
	for i := 0; i < 2; i++ {
		f := fs.Take(httptest.NewRequest("DELETE", "/b/x", nil))
		if f == nil || f.Status != 409 {
			t.Fatalf("hit %d: %+v", i, f)
		}
		f.Count = 99 // a copy: the armed fault is not changed through it
	}
	if f := fs.Take(httptest.NewRequest("DELETE", "/b/x", nil)); f != nil {
		t.Fatalf("a count-2 fault hit a third time: %+v", f)
	}
	if n := len(fs.List()); n != 1 {
		t.Fatalf("left armed: %d, want the -1 fault only", n)
	}
	fs.Clear()
	if f := fs.Take(httptest.NewRequest("POST", "/b/big?uploads=", nil)); f != nil || len(fs.List()) != 0 {
		t.Fatalf("cleared, yet %+v", f)
	}
}

func TestFaultRuleBadRegexp(t *testing.T) {
	r := FaultRule{Path: "("}
	if err := r.Compile(); err == nil {
		t.Fatal("compiled an invalid regexp")
	}
}
