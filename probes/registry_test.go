package probes

import "testing"

func TestRegistrySortedAndUnique(t *testing.T) {
	for i := 1; i < len(registry); i++ {
		if registry[i-1].Name() >= registry[i].Name() {
			t.Errorf("registry not sorted/unique at %q, %q", registry[i-1].Name(), registry[i].Name())
		}
	}
}
