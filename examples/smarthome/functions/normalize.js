// Averages the readings and converts them to Celsius. Pure: the output depends on the input only.
function main(params) {
  const readings = params.readings || [];
  if (readings.length === 0) return { error: 'no readings' };
  const mean = readings.reduce((a, b) => a + b, 0) / readings.length;
  const celsius = params.unit === 'F' ? ((mean - 32) * 5) / 9 : mean;
  return { celsius: Math.round(celsius * 10) / 10, samples: readings.length };
}
