"""`pvc-lab`: N nodes of the real image on one machine, with simulated BMCs, formed from one cluster.toml.

state.py      lab.json and power.json as typed records; where the lab's files and example configs are
network.py    the lab's namespaces, bridges and NICs
disks.py      sparse files, loop devices and the PVCCONFIG disk
machine.py    a node as a process group in a network namespace (what both backends share)
container.py  the `container` backend (systemd-nspawn)
vm.py, pxe.py the `vm` backend (QEMU) and its PXE services
bmc.py        a simulated BMC: real IPMI whose power commands start and stop a machine
supervisor.py one process per node holding its BMC and its machine
up.py, down.py, observe.py   bringing a lab up, taking it down, and watching its nodes form
cli.py        the `pvc-lab` command
"""
