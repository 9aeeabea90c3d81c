package probes

// registry is every probe, sorted by name. Add a probe here and nowhere else.
var registry = []Probe{
	adeProbe{},
	distroProbe{},
	encryptionProbe{},
	extensionProbe{},
	fsProbe{},
	fstabProbe{},
	kernelProbe{},
	lvmProbe{},
	memoryProbe{},
	mountsProbe{},
	networkProbe{},
	oldrootProbe{},
	osDriveProbe{},
	selinuxProbe{},
	servicesProbe{},
	toolsProbe{},
	waagentProbe{},
}

// All returns the registered probes in name order.
func All() []Probe { return append([]Probe(nil), registry...) }
