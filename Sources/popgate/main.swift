import PopgateCLI

await Popgate.main()
