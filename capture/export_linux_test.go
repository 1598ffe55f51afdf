package capture

// ResetSetupPeak clears the highest number of ring set-ups seen running at
// once inside netns.Do, and SetupPeak returns it.
func ResetSetupPeak()  { setupPeak.Store(0) }
func SetupPeak() int64 { return setupPeak.Load() }

const MaxSetupThreadsTotal = maxSetupThreadsTotal
